//! Artillery scripts, run as artillery 2 runs them, for the subset the clinic's scripts
//! use: `config.target`, `config.phases` (`duration`, `arrivalRate`, `rampTo`),
//! `config.variables`, `config.defaults.headers`, a CSV `config.payload`, and scenarios
//! whose `flow` of `post` and `think` steps each virtual user runs in order, with
//! `{{ … }}` templates (variables, payload fields, `$env.NAME`,
//! `$randomNumber(min, max)`, `$randomString(n)`). Anything else is refused by name: a
//! script that half runs measures something other than what its author meant.
//!
//! Where artillery's behaviour is surprising it is kept, so that both send the same
//! requests: config templates are resolved once, at load; a template that is exactly
//! one variable keeps the variable's type, any other is text (so a function's result is
//! always text); CSV fields that look like numbers become numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Map, Value};

use super::arrivals::Phase;

#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub target: Option<String>,
    pub phases: Vec<Phase>,
    /// `config.defaults.headers`, names in lower case, templates resolved at load.
    pub headers: Vec<(String, String)>,
    /// `config.variables`: each virtual user gets one of a list's values at random.
    variables: Vec<(String, Vec<Value>)>,
    payload: Option<Payload>,
    pub scenarios: Vec<Scenario>,
    /// The `$env` names the flows use, read once at load.
    env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: Option<String>,
    /// Artillery's `weight` (default 1): how often this scenario is picked.
    pub weight: u32,
    pub flow: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Post(Post),
    Think(Duration),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Post {
    url: Template,
    /// Lower-case names; they override `config.defaults.headers`.
    headers: Vec<(String, Template)>,
    json: Option<Shape>,
}

/// One POST of one virtual user, templates expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// A path under the target, e.g. `/api/book-appointment`.
    pub path: String,
    /// Every header the script gives this request, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body; `None` when the step has no `json` (artillery then sends none).
    pub json: Option<Value>,
}

/// A CSV `config.payload`: each virtual user gets one row.
#[derive(Debug, Clone, PartialEq)]
struct Payload {
    fields: Vec<String>,
    rows: Vec<Vec<Value>>,
    sequence: bool,
}

/// The variables of one virtual user: its payload row and its picks of
/// `config.variables` (which win over payload fields of the same name, as in artillery).
#[derive(Debug, Clone, Default)]
pub struct VirtualUser {
    vars: BTreeMap<String, Value>,
}

/// A `{{ … }}` expression.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Var(String),
    Env(String),
    RandomNumber(i64, i64),
    RandomString(usize),
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Expr(Expr),
}

/// A string of the script with its templates read.
#[derive(Debug, Clone, PartialEq)]
struct Template(Vec<Piece>);

/// A JSON body with templates in its strings.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Plain(Value),
    Text(Template),
    List(Vec<Shape>),
    Map(Vec<(String, Shape)>),
}

/// What templates may refer to where they are expanded.
struct Scope<'a> {
    vars: &'a BTreeMap<String, Value>,
    env: &'a BTreeMap<String, String>,
}

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Script {
    /// Reads a script; `dir` is where a payload's relative `path` starts (the
    /// script's folder) and `env` reads environment variables.
    pub fn parse(text: &str, dir: &Path, env: Env) -> Result<Script, String> {
        if let Some(problem) = js_yaml_surprise(text) {
            return Err(problem);
        }
        let doc: Value =
            yaml_serde::from_str(text).map_err(|e| format!("not an artillery script: {e}"))?;
        let top = object(&doc, "the script")?;
        refuse_others(top, "", &["config", "scenarios"])?;
        let config = object(top.get("config").ok_or("config is missing")?, "config")?;
        refuse_others(
            config,
            "config.",
            &["target", "phases", "variables", "defaults", "payload"],
        )?;
        let mut loader = Loader {
            env,
            used_env: BTreeMap::new(),
        };

        let target = match config.get("target") {
            Some(t) => Some(loader.config_text(t, "config.target")?),
            None => None,
        };
        let phases = loader.phases(config.get("phases"))?;
        let headers = match config.get("defaults") {
            None => Vec::new(),
            Some(defaults) => {
                let defaults = object(defaults, "config.defaults")?;
                refuse_others(defaults, "config.defaults.", &["headers"])?;
                match defaults.get("headers") {
                    None => Vec::new(),
                    Some(h) => object(h, "config.defaults.headers")?
                        .iter()
                        .map(|(name, v)| {
                            let at = format!("config.defaults.headers.{name}");
                            Ok((name.to_ascii_lowercase(), loader.config_text(v, &at)?))
                        })
                        .collect::<Result<_, String>>()?,
                }
            }
        };
        let variables = match config.get("variables") {
            None => Vec::new(),
            Some(v) => loader.variables(object(v, "config.variables")?)?,
        };
        let payload = match config.get("payload") {
            None => None,
            Some(p) => Some(loader.payload(p, dir)?),
        };
        let scenarios = match top.get("scenarios") {
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, s)| Scenario::parse(s, &format!("scenarios[{i}]")))
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err("scenarios must be a list".into()),
            None => return Err("scenarios is missing: nothing to send".into()),
        };
        if !scenarios
            .iter()
            .any(|s| s.weight > 0 && s.flow.iter().any(|step| matches!(step, Step::Post(_))))
        {
            return Err("no scenario has a `post` step: nothing to send".into());
        }

        let known: BTreeSet<&str> = variables
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(
                payload
                    .iter()
                    .flat_map(|p| p.fields.iter().map(String::as_str)),
            )
            .collect();
        let mut flow_env = BTreeMap::new();
        for (i, scenario) in scenarios.iter().enumerate() {
            for (j, step) in scenario.flow.iter().enumerate() {
                let Step::Post(post) = step else { continue };
                for expr in post.exprs() {
                    match expr {
                        Expr::Var(name) if !known.contains(name.as_str()) => {
                            return Err(format!(
                                "scenarios[{i}].flow[{j}]: {{{{ {name} }}}} is neither a variable of config.variables nor a field of config.payload"
                            ))
                        }
                        Expr::Env(name) => {
                            flow_env.insert(name.clone(), loader.env_var(name)?);
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(Script {
            target,
            phases,
            headers,
            variables,
            payload,
            scenarios,
            env: flow_env,
        })
    }

    /// A new virtual user: its payload row (`sequence` counts users for
    /// `order: sequence`) and its picks of the variables.
    pub fn virtual_user(&self, sequence: &AtomicUsize) -> VirtualUser {
        let mut vars = BTreeMap::new();
        if let Some(payload) = &self.payload {
            let row = if payload.sequence {
                sequence.fetch_add(1, Ordering::Relaxed) % payload.rows.len()
            } else {
                fastrand::usize(0..payload.rows.len())
            };
            for (field, value) in payload.fields.iter().zip(&payload.rows[row]) {
                vars.insert(field.clone(), value.clone());
            }
        }
        for (name, values) in &self.variables {
            vars.insert(
                name.clone(),
                values[fastrand::usize(0..values.len())].clone(),
            );
        }
        VirtualUser { vars }
    }

    /// A scenario picked by weight.
    pub fn pick_scenario(&self) -> &Scenario {
        let total: u32 = self.scenarios.iter().map(|s| s.weight).sum();
        let mut pick = fastrand::u32(0..total.max(1));
        for scenario in &self.scenarios {
            if pick < scenario.weight {
                return scenario;
            }
            pick -= scenario.weight;
        }
        &self.scenarios[0]
    }

    /// The request a `post` step sends for `user`, templates expanded now (so each
    /// `$randomString` is drawn afresh), headers merged over the defaults.
    pub fn request(&self, post: &Post, user: &VirtualUser) -> Request {
        let scope = Scope {
            vars: &user.vars,
            env: &self.env,
        };
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(name, _)| !post.headers.iter().any(|(n, _)| n == name))
            .cloned()
            .collect();
        headers.extend(
            post.headers
                .iter()
                .map(|(name, value)| (name.clone(), value.text(&scope))),
        );
        Request {
            path: post.url.text(&scope),
            headers,
            json: post.json.as_ref().map(|shape| shape.render(&scope)),
        }
    }
}

/// Reads the config, resolving its templates once (artillery does the same before any
/// virtual user exists, so only `$env` and functions mean anything there).
struct Loader<'a> {
    env: Env<'a>,
    used_env: BTreeMap<String, String>,
}

impl Loader<'_> {
    fn env_var(&mut self, name: &str) -> Result<String, String> {
        if let Some(value) = self.used_env.get(name) {
            return Ok(value.clone());
        }
        let value = (self.env)(name).ok_or_else(|| {
            format!("the script uses {{{{ $env.{name} }}}} but the environment variable {name} is not set")
        })?;
        self.used_env.insert(name.to_owned(), value.clone());
        Ok(value)
    }

    /// A config value with its templates resolved now.
    fn config_value(&mut self, value: &Value, at: &str) -> Result<Value, String> {
        let shape = Shape::parse(value, at)?;
        let mut env = BTreeMap::new();
        for expr in shape.exprs() {
            match expr {
                Expr::Var(name) => return Err(format!(
                    "{at}: {{{{ {name} }}}} cannot be used in config: artillery resolves config templates once, before any virtual user has variables (use $env or a function)"
                )),
                Expr::Env(name) => {
                    env.insert(name.clone(), self.env_var(name)?);
                }
                _ => {}
            }
        }
        let vars = BTreeMap::new();
        Ok(shape.render(&Scope {
            vars: &vars,
            env: &env,
        }))
    }

    fn config_text(&mut self, value: &Value, at: &str) -> Result<String, String> {
        match self.config_value(value, at)? {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(format!("{at} must be text")),
        }
    }

    fn number(&mut self, value: &Value, at: &str) -> Result<f64, String> {
        let parsed = match self.config_value(value, at)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        parsed
            .filter(|n| n.is_finite() && *n >= 0.0)
            .ok_or_else(|| {
                format!(
                    "{at} must be a number of at least 0 (durations in seconds: 60, not \"1m\")"
                )
            })
    }

    fn phases(&mut self, phases: Option<&Value>) -> Result<Vec<Phase>, String> {
        let Some(Value::Array(list)) = phases else {
            return Err("config.phases must be a list of phases".into());
        };
        if list.is_empty() {
            return Err("config.phases is empty: nothing to run".into());
        }
        let mut out = Vec::new();
        for (i, phase) in list.iter().enumerate() {
            let at = format!("config.phases[{i}]");
            let fields = object(phase, &at)?;
            refuse_others(
                fields,
                &format!("{at}."),
                &["duration", "arrivalRate", "rampTo", "name"],
            )?;
            let mut read = |key: &str| -> Result<Option<f64>, String> {
                fields
                    .get(key)
                    .map(|v| self.number(v, &format!("{at}.{key}")))
                    .transpose()
            };
            let duration = read("duration")?.ok_or_else(|| format!("{at}.duration is missing"))?;
            let ramp_to = read("rampTo")?;
            let arrival_rate = match (read("arrivalRate")?, ramp_to) {
                (Some(rate), _) => rate,
                // Artillery starts a ramp without arrivalRate at 0.
                (None, Some(_)) => 0.0,
                (None, None) => return Err(format!("{at}.arrivalRate is missing")),
            };
            let phase = Phase {
                duration,
                arrival_rate,
                ramp_to,
            };
            phase.check().map_err(|e| format!("{at}: {e}"))?;
            out.push(phase);
        }
        Ok(out)
    }

    fn variables(
        &mut self,
        list: &Map<String, Value>,
    ) -> Result<Vec<(String, Vec<Value>)>, String> {
        list.iter()
            .map(|(name, value)| {
                let at = format!("config.variables.{name}");
                if !is_name(name) {
                    return Err(format!(
                        "{at}: a variable's name is letters, digits, _ and -"
                    ));
                }
                let values = match self.config_value(value, &at)? {
                    Value::Array(values) if values.is_empty() => {
                        return Err(format!("{at} is an empty list"))
                    }
                    Value::Array(values) => values,
                    one => vec![one],
                };
                Ok((name.clone(), values))
            })
            .collect()
    }

    fn payload(&mut self, spec: &Value, dir: &Path) -> Result<Payload, String> {
        let spec = match spec {
            Value::Array(list) if list.len() == 1 => &list[0],
            Value::Array(_) => {
                return Err("config.payload: only one payload file is supported".into())
            }
            one => one,
        };
        let fields = object(spec, "config.payload")?;
        refuse_others(
            fields,
            "config.payload.",
            &[
                "path",
                "fields",
                "order",
                "skipHeader",
                "delimiter",
                "cast",
                "skipEmptyLines",
            ],
        )?;
        let path = self.config_text(
            fields.get("path").ok_or("config.payload.path is missing")?,
            "config.payload.path",
        )?;
        let names: Vec<String> = match fields.get("fields") {
            Some(Value::Array(names)) if !names.is_empty() => names
                .iter()
                .map(|n| match n {
                    Value::String(s) if is_name(s) => Ok(s.clone()),
                    _ => Err(
                        "config.payload.fields: each field is a name (letters, digits, _ and -)"
                            .to_owned(),
                    ),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err("config.payload.fields must be a list of column names".into()),
        };
        let flag = |key: &str, default: bool| match fields.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(format!("config.payload.{key} must be true or false")),
        };
        let skip_header = flag("skipHeader", false)?;
        let cast = flag("cast", true)?;
        if !flag("skipEmptyLines", true)? {
            return Err("config.payload.skipEmptyLines: false is not supported".into());
        }
        let sequence = match fields.get("order").and_then(Value::as_str) {
            None if fields.get("order").is_none() => false,
            Some("random") => false,
            Some("sequence") => true,
            _ => return Err("config.payload.order must be random or sequence".into()),
        };
        let delimiter = match fields.get("delimiter") {
            None => b',',
            Some(Value::String(d)) if d.len() == 1 => d.as_bytes()[0],
            Some(_) => return Err("config.payload.delimiter must be one character".into()),
        };
        let file = dir.join(&path);
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("config.payload.path: cannot read {}: {e}", file.display()))?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .from_reader(text.as_bytes());
        let mut rows = Vec::new();
        let mut width = None;
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| format!("{}: {e}", file.display()))?;
            if i == 0 && skip_header {
                continue;
            }
            let columns = *width.get_or_insert(record.len());
            if record.len() != columns {
                return Err(format!(
                    "{}: line {} has {} columns where the first has {columns}",
                    file.display(),
                    record.position().map_or(i as u64 + 1, |p| p.line()),
                    record.len()
                ));
            }
            rows.push(
                record
                    .iter()
                    .map(|field| {
                        if cast {
                            csv_cast(field)
                        } else {
                            Value::from(field)
                        }
                    })
                    .collect::<Vec<_>>(),
            );
        }
        match width {
            None => Err(format!("{}: the payload has no rows", file.display())),
            Some(columns) if columns < names.len() => Err(format!(
                "{}: config.payload.fields names {} columns but the file has {columns}",
                file.display(),
                names.len()
            )),
            Some(_) => Ok(Payload {
                fields: names,
                rows,
                sequence,
            }),
        }
    }
}

impl Scenario {
    fn parse(value: &Value, at: &str) -> Result<Scenario, String> {
        let fields = object(value, at)?;
        refuse_others(fields, &format!("{at}."), &["name", "weight", "flow"])?;
        let weight = match fields.get("weight") {
            None => 1,
            Some(w) => w
                .as_u64()
                .and_then(|w| u32::try_from(w).ok())
                .ok_or_else(|| format!("{at}.weight must be a whole number"))?,
        };
        let steps = match fields.get("flow") {
            Some(Value::Array(steps)) => steps,
            _ => return Err(format!("{at}.flow must be a list of steps")),
        };
        // Artillery flattens nested lists of steps (from YAML references).
        let flat: Vec<&Value> = steps
            .iter()
            .flat_map(|s| match s {
                Value::Array(inner) => inner.iter().collect(),
                one => vec![one],
            })
            .collect();
        let flow = flat
            .into_iter()
            .enumerate()
            .map(|(j, step)| Step::parse(step, &format!("{at}.flow[{j}]")))
            .collect::<Result<_, _>>()?;
        Ok(Scenario {
            name: fields
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned),
            weight,
            flow,
        })
    }
}

impl Step {
    fn parse(value: &Value, at: &str) -> Result<Step, String> {
        let fields = object(value, at)?;
        let mut keys = fields.keys();
        let (Some(kind), None) = (keys.next(), keys.next()) else {
            return Err(format!("{at}: a step has exactly one kind (post or think)"));
        };
        match kind.as_str() {
            "post" => Ok(Step::Post(Post::parse(
                &fields[kind],
                &format!("{at}.post"),
            )?)),
            "think" => Ok(Step::Think(think(&fields[kind], &format!("{at}.think"))?)),
            other => Err(format!(
                "{at}: the `{other}` step is not supported (only post and think)"
            )),
        }
    }
}

/// Artillery's think time: whole seconds, or text with a unit (`500ms`, `2s`). A
/// fractional number is refused: artillery reads `think: 0.5` as no pause at all.
fn think(value: &Value, at: &str) -> Result<Duration, String> {
    let seconds = match value {
        Value::Number(n) if n.is_u64() => n.as_u64().map(|s| s as f64),
        Value::Number(_) => {
            return Err(format!(
                "{at}: artillery reads a fractional number of seconds as no pause; write it with a unit, e.g. \"500ms\""
            ))
        }
        Value::String(s) => {
            let s = s.trim();
            let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
                (n, 0.001)
            } else if let Some(n) = s.strip_suffix('s') {
                (n, 1.0)
            } else if let Some(n) = s.strip_suffix('m') {
                (n, 60.0)
            } else if s.parse::<u64>().is_ok() {
                (s, 1.0)
            } else {
                ("", 0.0)
            };
            number.trim().parse::<f64>().ok().map(|n| n * scale)
        }
        _ => None,
    };
    seconds
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 3600.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            format!("{at}: whole seconds, or a time such as \"500ms\" or \"2s\" (at most an hour)")
        })
}

impl Post {
    fn parse(value: &Value, at: &str) -> Result<Post, String> {
        let fields = object(value, at)?;
        refuse_others(
            fields,
            &format!("{at}."),
            &["url", "json", "headers", "name"],
        )?;
        let url = match fields.get("url") {
            Some(Value::String(url)) => url,
            _ => return Err(format!("{at}.url is missing")),
        };
        if !url.starts_with('/') && !url.starts_with("{{") {
            return Err(format!(
                "{at}.url: only paths under config.target are supported (\"/api/…\")"
            ));
        }
        let url = Template::parse(url, &format!("{at}.url"))?;
        let headers = match fields.get("headers") {
            None => Vec::new(),
            Some(h) => object(h, &format!("{at}.headers"))?
                .iter()
                .map(|(name, v)| {
                    let at = format!("{at}.headers.{name}");
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(_) | Value::Bool(_) => v.to_string(),
                        _ => return Err(format!("{at} must be text")),
                    };
                    Ok((name.to_ascii_lowercase(), Template::parse(&text, &at)?))
                })
                .collect::<Result<_, String>>()?,
        };
        let json = fields
            .get("json")
            .map(|j| Shape::parse(j, &format!("{at}.json")))
            .transpose()?;
        Ok(Post { url, headers, json })
    }

    fn exprs(&self) -> Vec<&Expr> {
        let mut out: Vec<&Expr> = self.url.exprs().collect();
        out.extend(self.headers.iter().flat_map(|(_, t)| t.exprs()));
        if let Some(json) = &self.json {
            out.extend(json.exprs());
        }
        out
    }
}

impl Template {
    fn parse(text: &str, at: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            if after.starts_with('{') {
                return Err(format!("{at}: {{{{{{ … }}}}}} templates are not supported"));
            }
            let close = after
                .find("}}")
                .ok_or_else(|| format!("{at}: a template opened with {{{{ is not closed"))?;
            pieces.push(Piece::Expr(Expr::parse(after[..close].trim(), at)?));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template(pieces))
    }

    fn exprs(&self) -> impl Iterator<Item = &Expr> {
        self.0.iter().filter_map(|p| match p {
            Piece::Expr(e) => Some(e),
            Piece::Text(_) => None,
        })
    }

    /// The value: a template that is exactly one variable keeps the variable's type
    /// (artillery's rule, so `slotIndex: "{{ slot }}"` sends a number); anything else is text.
    fn render(&self, scope: &Scope) -> Value {
        if let [Piece::Expr(Expr::Var(name))] = self.0.as_slice() {
            return scope.vars.get(name).cloned().unwrap_or(Value::Null);
        }
        Value::String(self.text(scope))
    }

    fn text(&self, scope: &Scope) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Expr(Expr::Var(name)) => {
                    out.push_str(&js_text(scope.vars.get(name).unwrap_or(&Value::Null)))
                }
                Piece::Expr(Expr::Env(name)) => {
                    out.push_str(scope.env.get(name).map_or("", String::as_str))
                }
                Piece::Expr(Expr::RandomNumber(min, max)) => {
                    out.push_str(&fastrand::i64(*min..=*max).to_string())
                }
                Piece::Expr(Expr::RandomString(n)) => out.extend((0..*n).map(|_| {
                    const ALPHABET: &[u8] =
                        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
                    ALPHABET[fastrand::usize(0..ALPHABET.len())] as char
                })),
            }
        }
        out
    }
}

impl Expr {
    fn parse(expr: &str, at: &str) -> Result<Expr, String> {
        let unsupported = || {
            format!(
                "{at}: {{{{ {expr} }}}} is not supported (templates may name a variable or payload field, $env.NAME, $randomNumber(min, max) or $randomString(n))"
            )
        };
        if let Some(call) = expr.strip_prefix('$').filter(|e| e.contains('(')) {
            let (name, args) = call.split_once('(').ok_or_else(unsupported)?;
            let args = args.strip_suffix(')').ok_or_else(unsupported)?;
            let args: Vec<&str> = args
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .collect();
            let numbers: Vec<i64> = args
                .iter()
                .map(|a| a.parse::<i64>().ok().filter(|n| *n >= 0))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    format!(
                        "{at}: {{{{ {expr} }}}}: the arguments must be whole numbers of at least 0"
                    )
                })?;
            return match (name.trim(), numbers.as_slice()) {
                ("randomNumber", [a, b]) => Ok(Expr::RandomNumber(*a.min(b), *a.max(b))),
                ("randomNumber", _) => Err(format!("{at}: $randomNumber takes two numbers, min and max")),
                ("randomString", []) => Ok(Expr::RandomString(10)),
                ("randomString", [n]) if *n <= 10_000 => Ok(Expr::RandomString(*n as usize)),
                ("randomString", _) => Err(format!("{at}: $randomString takes one length, at most 10000")),
                (other, _) => Err(format!(
                    "{at}: the template function ${other} is not supported (only $randomNumber and $randomString)"
                )),
            };
        }
        if let Some(name) = expr.strip_prefix("$env.") {
            return if is_name(name) {
                Ok(Expr::Env(name.to_owned()))
            } else {
                Err(unsupported())
            };
        }
        if is_name(expr) {
            Ok(Expr::Var(expr.to_owned()))
        } else {
            Err(unsupported())
        }
    }
}

impl Shape {
    fn parse(value: &Value, at: &str) -> Result<Shape, String> {
        Ok(match value {
            Value::String(s) if s.contains("{{") => Shape::Text(Template::parse(s, at)?),
            Value::Array(items) => Shape::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Shape::parse(v, &format!("{at}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(fields) => Shape::Map(
                fields
                    .iter()
                    .map(|(k, v)| {
                        if k.contains("{{") {
                            return Err(format!(
                                "{at}: templates in names ({k}) are not supported"
                            ));
                        }
                        Ok((k.clone(), Shape::parse(v, &format!("{at}.{k}"))?))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            plain => Shape::Plain(plain.clone()),
        })
    }

    fn render(&self, scope: &Scope) -> Value {
        match self {
            Shape::Plain(v) => v.clone(),
            Shape::Text(t) => t.render(scope),
            Shape::List(items) => Value::Array(items.iter().map(|i| i.render(scope)).collect()),
            Shape::Map(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.render(scope)))
                    .collect(),
            ),
        }
    }

    fn exprs(&self) -> Vec<&Expr> {
        match self {
            Shape::Plain(_) => Vec::new(),
            Shape::Text(t) => t.exprs().collect(),
            Shape::List(items) => items.iter().flat_map(Shape::exprs).collect(),
            Shape::Map(fields) => fields.iter().flat_map(|(_, v)| v.exprs()).collect(),
        }
    }
}

/// A value as JavaScript writes it into a string: text as is, objects as JSON.
fn js_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// csv-parse's `cast: true`: a field that reads as a number becomes one.
fn csv_cast(field: &str) -> Value {
    let t = field.trim();
    let numeric = !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && t.bytes().any(|b| b.is_ascii_digit());
    match t.parse::<f64>() {
        Ok(n) if numeric && n.is_finite() => {
            if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
                Value::from(n as i64)
            } else {
                Value::from(n)
            }
        }
        _ => Value::from(field),
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn object<'v>(value: &'v Value, at: &str) -> Result<&'v Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("{at} must be a mapping of names to values"))
}

/// Refuses every key but `known`, naming the first one as the unsupported feature.
fn refuse_others(fields: &Map<String, Value>, prefix: &str, known: &[&str]) -> Result<(), String> {
    match fields.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => Err(format!(
            "{prefix}{key} is not supported (slotguard runs {})",
            known
                .iter()
                .map(|k| format!("{prefix}{k}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Artillery reads YAML with js-yaml, which turns an unquoted date into a timestamp
/// (`date: 2026-12-01` is sent as "2026-12-01T00:00:00.000Z") and `10:30` into 630.
/// yaml_serde (the YAML organization's maintained fork of serde_yaml) keeps both as
/// text, so the two tools would send different bodies: such a value is refused with
/// the line it is on.
fn js_yaml_surprise(text: &str) -> Option<String> {
    for (n, line) in text.lines().enumerate() {
        let mut rest = strip_comment(line);
        // Plain scalars in value position: after `key: `, `- `, `[`, `{` or `,`.
        loop {
            let start = rest
                .char_indices()
                .find(|(i, c)| {
                    matches!(c, '[' | '{' | ',')
                        || (*c == ':' && rest[i + 1..].starts_with(' '))
                        || (*c == '-'
                            && rest[..*i].trim().is_empty()
                            && rest[i + 1..].starts_with(' '))
                })
                .map(|(i, _)| i + 1);
            let Some(start) = start else { break };
            let value = rest[start..].trim_start();
            if value.starts_with(['"', '\'', '#']) {
                break;
            }
            let end = value.find([',', ']', '}', '#']).unwrap_or(value.len());
            let scalar = value[..end].trim();
            if looks_like_timestamp(scalar) {
                return Some(format!(
                    "line {}: the unquoted date {scalar} is a timestamp to artillery's YAML reader, which sends \"{scalar}T00:00:00.000Z\"; quote it (\"{scalar}\")",
                    n + 1
                ));
            }
            if looks_sexagesimal(scalar) {
                return Some(format!(
                    "line {}: the unquoted {scalar} is a base-60 number to artillery's YAML reader; quote it (\"{scalar}\")",
                    n + 1
                ));
            }
            rest = &rest[start..];
        }
    }
    None
}

/// The line without its `# comment` (a `#` at the start or after a space, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') if previous.is_whitespace() => return &line[..i],
            _ => {}
        }
        previous = c;
    }
    line
}

fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
        && (b.len() == 10 || matches!(b[10], b'T' | b't' | b' '))
}

/// js-yaml 3's base-60 integers: `1:30`, `10:30:15` (not `09:30`).
fn looks_sexagesimal(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let mut parts = s.split(':');
    let Some(first) = parts.next() else {
        return false;
    };
    let first_ok = first.starts_with(|c: char| ('1'..='9').contains(&c))
        && first.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    let mut rest = parts.peekable();
    first_ok
        && rest.peek().is_some()
        && rest.all(|p| {
            (1..=2).contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u8>().is_ok_and(|n| n < 60)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Script, String> {
        Script::parse(text, Path::new("."), &no_env)
    }

    fn requests(script: &Script, user: &VirtualUser) -> Vec<Request> {
        script.scenarios[0]
            .flow
            .iter()
            .filter_map(|s| match s {
                Step::Post(p) => Some(script.request(p, user)),
                Step::Think(_) => None,
            })
            .collect()
    }

    #[test]
    fn the_clinics_plan_reads_as_written() {
        let script = parse(
            r#"
config:
  target: "http://localhost:3000"
  phases:
    - duration: 60
      arrivalRate: 10
      name: "Morning rush"
scenarios:
  - name: "Book slot 5"
    flow:
      - post:
          url: "/api/book-appointment"
          json:
            clinicId: "demo-clinic"
            doctor: "Asha Menon"
            date: "2026-12-02"
            slotIndex: 5
      - think: 1
"#,
        )
        .unwrap();
        assert_eq!(script.target.as_deref(), Some("http://localhost:3000"));
        assert_eq!(
            script.phases,
            vec![Phase {
                duration: 60.0,
                arrival_rate: 10.0,
                ramp_to: None
            }]
        );
        let flow = &script.scenarios[0].flow;
        assert_eq!(flow.len(), 2);
        assert_eq!(flow[1], Step::Think(Duration::from_secs(1)));
        let sent = requests(&script, &VirtualUser::default());
        assert_eq!(sent[0].path, "/api/book-appointment");
        assert_eq!(
            sent[0].json,
            Some(
                json!({"clinicId": "demo-clinic", "doctor": "Asha Menon", "date": "2026-12-02", "slotIndex": 5})
            )
        );
    }

    #[test]
    fn templates_expand_as_artillery_expands_them() {
        let env = |name: &str| match name {
            "KEY" => Some("sg_secret".to_owned()),
            "DAY" => Some("2026-12-02".to_owned()),
            _ => None,
        };
        let script = Script::parse(
            r#"
config:
  target: "http://127.0.0.1:{{ $env.PORT_IS_NOT_USED_HERE_SO_THIS_IS_TEXT }}"
  phases: [{duration: 1, arrivalRate: 1}]
scenarios: [{flow: [{post: {url: /a}}]}]
"#,
            Path::new("."),
            &env,
        )
        .unwrap_err();
        assert!(
            script.contains("PORT_IS_NOT_USED_HERE_SO_THIS_IS_TEXT is not set"),
            "{script}"
        );

        let script = Script::parse(
            r#"
config:
  phases: [{duration: 1, arrivalRate: 1}]
  defaults:
    headers:
      Authorization: "Bearer {{ $env.KEY }}"
  variables:
    slot: [7]
    clinic: "demo-clinic"
scenarios:
  - flow:
      - post:
          url: "/api/book-appointment"
          headers: {X-Day: "{{ $env.DAY }}"}
          json:
            clinicId: "{{ clinic }}"
            slotIndex: "{{ slot }}"
            note: "slot {{ slot }} at {{ clinic }}"
            phone: "98470{{ $randomNumber(10000, 10000) }}"
            patientName: "P {{ $randomString(6) }}"
            date: "{{ $env.DAY }}"
"#,
            Path::new("."),
            &env,
        )
        .unwrap();
        assert_eq!(
            script.headers,
            vec![("authorization".to_owned(), "Bearer sg_secret".to_owned())]
        );
        let user = script.virtual_user(&AtomicUsize::new(0));
        let sent = &requests(&script, &user)[0];
        assert_eq!(
            sent.headers[1],
            ("x-day".to_owned(), "2026-12-02".to_owned())
        );
        let body = sent.json.as_ref().unwrap();
        assert_eq!(body["clinicId"], "demo-clinic");
        assert_eq!(body["slotIndex"], 7, "a lone variable keeps its type");
        assert_eq!(body["note"], "slot 7 at demo-clinic");
        assert_eq!(body["phone"], "9847010000", "a function's result is text");
        assert_eq!(body["date"], "2026-12-02");
        let name = body["patientName"].as_str().unwrap();
        assert!(
            name.starts_with("P ")
                && name.len() == 8
                && name[2..].bytes().all(|b| b.is_ascii_alphanumeric())
        );
    }

    #[test]
    fn a_csv_payload_is_read_relative_to_the_script_in_sequence_with_numbers_cast() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(
            dir.path().join("data/p.csv"),
            "name,slot\nAnu,3\n\nBiju, 4\nChitra,x5\n",
        )
        .unwrap();
        let script = Script::parse(
            "config:\n  phases: [{duration: 1, arrivalRate: 1}]\n  payload:\n    path: data/p.csv\n    fields: [name, slot]\n    order: sequence\n    skipHeader: true\nscenarios: [{flow: [{post: {url: /a, json: {n: '{{ name }}', s: '{{ slot }}'}}}]}]\n",
            dir.path(),
            &no_env,
        )
        .unwrap();
        let users = AtomicUsize::new(0);
        let bodies: Vec<Value> = (0..4)
            .map(|_| {
                requests(&script, &script.virtual_user(&users))[0]
                    .json
                    .clone()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            bodies,
            vec![
                json!({"n": "Anu", "s": 3}),
                json!({"n": "Biju", "s": 4}),
                json!({"n": "Chitra", "s": "x5"}),
                json!({"n": "Anu", "s": 3}),
            ]
        );
        let missing = Script::parse(
            "config:\n  phases: [{duration: 1, arrivalRate: 1}]\n  payload: {path: nowhere.csv, fields: [a]}\nscenarios: [{flow: [{post: {url: /a}}]}]\n",
            dir.path(),
            &no_env,
        )
        .unwrap_err();
        assert!(missing.contains("nowhere.csv"), "{missing}");
    }

    #[test]
    fn ramps_weights_and_flows_are_kept_in_order() {
        let script = parse(
            "config:\n  phases:\n    - {duration: 10, arrivalRate: 1, rampTo: 5}\nscenarios:\n  - weight: 3\n    flow:\n      - post: {url: /a}\n      - think: \"500ms\"\n      - post: {url: /b}\n",
        )
        .unwrap();
        assert_eq!(script.phases[0].ramp_to, Some(5.0));
        assert_eq!(script.scenarios[0].weight, 3);
        let paths: Vec<String> = requests(&script, &VirtualUser::default())
            .into_iter()
            .map(|r| r.path)
            .collect();
        assert_eq!(paths, ["/a", "/b"]);
        assert_eq!(
            script.scenarios[0].flow[1],
            Step::Think(Duration::from_millis(500))
        );
    }

    #[test]
    fn every_unsupported_feature_is_refused_by_name() {
        let base = |config: &str, flow: &str| {
            format!("config:\n  phases: [{{duration: 1, arrivalRate: 1}}]\n{config}scenarios:\n  - flow:\n{flow}")
        };
        let post = "      - post: {url: /a}\n";
        for (script, named) in [
            (base("  plugins: {expect: {}}\n", post), "config.plugins"),
            (base("  processor: ./x.js\n", post), "config.processor"),
            (base("  http: {timeout: 5}\n", post), "config.http"),
            (base("  defaults: {think: {jitter: 1}}\n", post), "config.defaults.think"),
            (base("", "      - get: {url: /a}\n"), "`get` step"),
            (base("", "      - loop: []\n"), "`loop` step"),
            (base("", "      - post: {url: /a, capture: {json: $.id, as: id}}\n"), "post.capture"),
            (base("", "      - post: {url: /a, expect: [{statusCode: 201}]}\n"), "post.expect"),
            (base("", "      - post: {url: /a, body: x}\n"), "post.body"),
            (base("", "      - post: {url: /a, json: {id: '{{ $uuid }}'}}\n"), "{{ $uuid }}"),
            (base("", "      - post: {url: /a, json: {id: '{{ $randomUUID() }}'}}\n"), "$randomUUID"),
            (base("", "      - post: {url: /a, json: {id: '{{ nobody }}'}}\n"), "{{ nobody }}"),
            (base("", "      - think: 0.5\n"), "fractional"),
            (base("", "      - post: {url: 'http://elsewhere/a'}\n"), "only paths"),
            (base("  variables: {a: '{{ b }}'}\n", post), "cannot be used in config"),
            (base("  payload: [{path: a.csv, fields: [a]}, {path: b.csv, fields: [b]}]\n", post), "one payload"),
            (base("  payload: {path: a.csv, fields: [a], loadAll: true}\n", post), "config.payload.loadAll"),
            ("config:\n  phases: [{duration: 1, arrivalCount: 5}]\nscenarios: []\n".to_owned(), "arrivalCount"),
            ("config:\n  phases: [{duration: 1, arrivalRate: 1}]\nbefore: {flow: []}\nscenarios: []\n".to_owned(), "before"),
            (base("", "      - post: {url: /a, json: {date: 2026-12-02}}\n"), "unquoted date"),
            (base("", "      - post:\n          url: /a\n          json:\n            time: 10:30\n"), "base-60"),
            ("config:\n  phases: [{duration: 1, arrivalRate: 1}]\nscenarios: [{flow: [{think: 1}]}]".to_owned(), "post"),
            ("config:\n  phases: [{duration: 0, arrivalRate: 1}]\nscenarios: []".to_owned(), "phases[0]"),
            ("config: {phases: []}\nscenarios: []".to_owned(), "phases"),
            (": not yaml :".to_owned(), "artillery"),
        ] {
            let refused = parse(&script).expect_err(named);
            assert!(refused.contains(named), "{named}: {refused}");
        }
        assert!(parse(&base(
            "",
            "      - post: {url: /a, json: {date: \"2026-12-02\", time: \"09:50\"}}\n"
        ))
        .is_ok());
    }

    #[test]
    fn numbers_from_a_csv_follow_csv_parse() {
        assert_eq!(csv_cast("5"), json!(5));
        assert_eq!(csv_cast(" 5 "), json!(5));
        assert_eq!(csv_cast("-2.5"), json!(-2.5));
        assert_eq!(csv_cast("1e3"), json!(1000));
        assert_eq!(csv_cast("2026-12-02"), json!("2026-12-02"));
        assert_eq!(csv_cast("inf"), json!("inf"));
        assert_eq!(csv_cast(""), json!(""));
    }
}
