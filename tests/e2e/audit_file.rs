//! `slotguard audit --file`: the real binary over real files, no database.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};
use slotguard::watch::kloqo::parse_document;

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/kloqo/appointments.json"
);

fn audit(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_slotguard"))
        .arg("audit")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// The report of `--output json`.
fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(out), stderr(out)))
}

fn sample() -> Vec<Value> {
    let text = std::fs::read_to_string(SAMPLE).expect("the clinic's sample export beside the repo");
    serde_json::from_str(&text).unwrap()
}

fn write(dir: &tempfile::TempDir, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The sample with one patient moved into another's slot and token on the same
/// doctor-day: exactly one double booking. Returns the documents and the two ids.
fn sample_with_one_double_booking() -> (Vec<Value>, [String; 2]) {
    let mut documents = sample();
    let holders: Vec<usize> = (0..documents.len())
        .filter(|i| {
            let parsed = parse_document(&documents[*i]).unwrap();
            parsed.occupying && !parsed.is_break
        })
        .collect();
    let day = |i: usize| ["clinicId", "doctorId", "date"].map(|f| documents[i][f].clone());
    let (keep, moved) = holders
        .iter()
        .flat_map(|a| holders.iter().map(move |b| (*a, *b)))
        .find(|(a, b)| a != b && day(*a) == day(*b))
        .expect("two occupying appointments on one doctor-day");
    for field in ["slotIndex", "tokenNumber", "numericToken"] {
        documents[moved][field] = documents[keep][field].clone();
    }
    let mut ids = [keep, moved].map(|i| documents[i]["id"].as_str().unwrap().to_owned());
    ids.sort();
    (documents, ids)
}

fn as_jsonl(documents: &[Value]) -> String {
    documents.iter().map(|d| format!("{d}\n")).collect()
}

/// The API's columns, as a CSV export of the sample would have them.
const CSV_COLUMNS: [&str; 8] = [
    "id",
    "clinicId",
    "doctorId",
    "date",
    "slotIndex",
    "tokenNumber",
    "status",
    "cancelledByBreak",
];

fn as_csv(documents: &[Value]) -> String {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(CSV_COLUMNS).unwrap();
    for doc in documents {
        out.write_record(CSV_COLUMNS.map(|c| match &doc[c] {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }))
        .unwrap();
    }
    String::from_utf8(out.into_inner().unwrap()).unwrap()
}

#[test]
fn the_sample_export_audits_clean_and_exits_0() {
    let out = audit(&["--file", SAMPLE]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("(kloqo): appointments checked 34, duplicate groups 0"),
        "{text}"
    );
    assert!(
        text.contains("No slot or token is held by two occupying appointments."),
        "{text}"
    );

    let out = audit(&["--file", SAMPLE, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let report = report(&out);
    assert_eq!(
        report["counts"],
        json!({"appointmentsChecked": 34, "duplicateGroups": 0, "extraRows": 0, "affectedRows": 0})
    );
    assert_eq!(report["duplicates"], json!([]));
}

#[test]
fn one_patient_moved_into_anothers_slot_is_exactly_one_group_naming_both_and_exits_1() {
    let (documents, ids) = sample_with_one_double_booking();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "altered.json",
        serde_json::to_vec_pretty(&documents).unwrap(),
    );

    let out = audit(&["--file", path(&file), "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = report(&out);
    assert_eq!(
        report["counts"],
        json!({"appointmentsChecked": 34, "duplicateGroups": 1, "extraRows": 1, "affectedRows": 2})
    );
    let groups = report["duplicates"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["kind"], "slot");
    assert_eq!(groups[0]["members"], json!(ids));
    let moved = documents.iter().find(|d| d["id"] == ids[0]).unwrap();
    assert_eq!(groups[0]["key"], moved["slotIndex"].to_string());
    assert_eq!(groups[0]["sharedToken"], moved["tokenNumber"]);
    assert_eq!(groups[0]["clinicId"], moved["clinicId"]);
    assert!(
        stderr(&out).contains("duplicate groups found: 1"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("patientName"));
}

#[test]
fn a_truncated_export_exits_2_saying_where_it_breaks() {
    let whole = std::fs::read(SAMPLE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "cut.json", &whole[..whole.len() / 2]);
    let out = audit(&["--file", path(&file)]);
    assert_eq!(out.status.code(), Some(2));
    let error = stderr(&out);
    assert_eq!(error.trim_end().lines().count(), 1, "{error}");
    assert!(error.contains("truncated"), "{error}");
    assert!(
        error.contains("line ") && error.contains("reading record "),
        "{error}"
    );
    assert!(stdout(&out).is_empty(), "no report of half a file");
}

#[test]
fn json_lines_with_a_double_booking_and_a_bad_line_report_both_with_the_line_number() {
    let (documents, ids) = sample_with_one_double_booking();
    let dir = tempfile::tempdir().unwrap();
    let clean = write(&dir, "clean.jsonl", as_jsonl(&sample()));
    assert_eq!(audit(&["--file", path(&clean)]).status.code(), Some(0));

    let doubled = write(&dir, "doubled.jsonl", as_jsonl(&documents));
    let out = audit(&["--file", path(&doubled), "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(report(&out)["duplicates"][0]["members"], json!(ids));

    let mut lines = as_jsonl(&documents);
    let mut bad = documents[3].clone();
    bad["slotIndex"] = json!("7");
    lines.insert_str(0, &format!("{bad}\n\n{{\"id\": \"cut-short\", \n"));
    let with_bad_lines = write(&dir, "bad.jsonl", lines);
    let out = audit(&["--file", path(&with_bad_lines), "--output", "json"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an audit that skipped lines is incomplete"
    );
    let report = report(&out);
    assert_eq!(
        report["duplicates"][0]["members"],
        json!(ids),
        "the rest is still audited"
    );
    assert_eq!(report["unreadableRecords"], 2);
    assert_eq!(report["unreadable"][0]["line"], 1);
    let reason = report["unreadable"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("slotIndex: must be a number, not a string"),
        "{reason}"
    );
    assert_eq!(report["unreadable"][1]["line"], 3);
    assert!(report["unreadable"][1]["reason"]
        .as_str()
        .unwrap()
        .starts_with("not valid JSON"));
    assert!(stderr(&out).contains("records that could not be read: 2"));
}

#[test]
fn csv_with_a_double_booking_and_a_bad_row_report_both_with_the_line_number() {
    let (documents, ids) = sample_with_one_double_booking();
    let dir = tempfile::tempdir().unwrap();
    let clean = write(&dir, "clean.csv", as_csv(&sample()));
    let out = audit(&["--file", path(&clean)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    let doubled = write(&dir, "doubled.csv", as_csv(&documents));
    let out = audit(&["--file", path(&doubled), "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(report(&out)["duplicates"][0]["members"], json!(ids));

    let mut rows = as_csv(&documents);
    rows.push_str("late-1,LhfG8x4SZZg1BLmCkpYF,dr-x,18 January 2026,-1,A1-000,Pending,\n");
    let with_bad_row = write(&dir, "bad.csv", rows);
    let out = audit(&["--file", path(&with_bad_row), "--output", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let report = report(&out);
    assert_eq!(report["duplicates"][0]["members"], json!(ids));
    assert_eq!(
        report["unreadable"],
        json!([{"line": documents.len() + 2, "reason": "slotIndex: must be a whole number from 0 to 4294967295"}])
    );
}

#[test]
fn table_json_and_csv_outputs_each_carry_the_groups_and_unreadable_records() {
    let (mut documents, ids) = sample_with_one_double_booking();
    let first_bystander = documents
        .iter()
        .position(|d| !ids.contains(&d["id"].as_str().unwrap().to_owned()))
        .unwrap();
    documents[first_bystander]["date"] = json!("18 Janvier 2026");
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "export.jsonl", as_jsonl(&documents));
    let args = |output| ["--file", path(&file), "--output", output];

    let table = stdout(&audit(&args("table")));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].contains("appointments checked 33, duplicate groups 1, extra rows 1, affected rows 2, unreadable records 1"), "{table}");
    assert!(
        lines[2]
            .split_whitespace()
            .eq(["clinic", "doctor", "date", "kind", "key", "members"]),
        "{table}"
    );
    assert!(
        lines[3].contains(&format!("{}, {}", ids[0], ids[1])),
        "{table}"
    );
    let unreadable = format!(
        "Unreadable records (1):\n  line {}: date: must be a date written like",
        first_bystander + 1
    );
    assert!(table.contains(&unreadable), "{table}");

    let report = report(&audit(&args("json")));
    // serde_json's map keeps its keys sorted.
    let keys: Vec<&str> = report
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "counts",
            "duplicates",
            "file",
            "format",
            "unreadable",
            "unreadableRecords"
        ]
    );
    assert_eq!(report["format"], "jsonl");

    let out = audit(&args("csv"));
    let mut csv = csv::Reader::from_reader(&out.stdout[..]);
    let header: Vec<String> = csv.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(
        header,
        [
            "finding",
            "clinicId",
            "doctorId",
            "date",
            "key",
            "sharedToken",
            "appointmentId",
            "position",
            "reason"
        ]
    );
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    let findings: Vec<(&str, &str)> = rows.iter().map(|r| (&r[0], &r[6])).collect();
    assert_eq!(
        findings,
        [
            ("slot", ids[0].as_str()),
            ("slot", ids[1].as_str()),
            ("unreadable", "")
        ]
    );
    assert_eq!(rows[2][7], format!("line {}", first_bystander + 1));
    assert!(
        stderr(&out).contains("duplicate groups 1"),
        "the counts go to stderr"
    );
}

#[test]
fn every_kind_of_bad_input_exits_2_with_a_message_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let line = |slot: &str| {
        format!(
            r#"{{"id": "a", "clinicId": "kochi", "doctorId": "dr-asha", "date": "2026-12-01", "slotIndex": {slot}, "status": "Pending"}}"#
        )
    };
    let missing = write(
        &dir,
        "missing-field.jsonl",
        r#"{"id": "a", "clinicId": "kochi", "doctorId": "dr-asha", "date": "2026-12-01", "status": "Pending"}"#,
    );
    let negative = write(&dir, "negative.jsonl", line("-3"));
    let huge = write(&dir, "huge.jsonl", line("4294967296"));
    let not_utf8 = write(&dir, "latin1.jsonl", b"{\"id\": \"caf\xe9\"}\n");
    let empty = write(&dir, "empty.jsonl", "");
    let shape = write(&dir, "object.json", line("5"));
    let unknown = write(&dir, "export.txt", "hello\n");
    let file_level: [(&[&str], &str); 7] = [
        (&["--file", "/nonexistent/export.json"], "No such file"),
        (&["--file", path(dir.path())], "Is a directory"),
        (&["--file", path(&empty)], "no appointments in the file"),
        (
            &["--file", path(&shape)],
            "is not a JSON array of appointment documents",
        ),
        (&["--file", path(&unknown)], "cannot tell the format"),
        (
            &["--file", path(&missing), "--format", "xml"],
            "invalid value 'xml' for '--format",
        ),
        (
            &["--file", path(&missing), "--date", "2026-12-01"],
            "cannot be used with",
        ),
    ];
    for (args, expected) in file_level {
        let out = audit(args);
        let error = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {error}");
        assert_eq!(error.trim_end().lines().count(), 1, "{args:?}: {error}");
        assert!(error.contains(expected), "{args:?}: {error}");
    }
    let record_level = [
        (&missing, "line 1: slotIndex: is required"),
        (
            &negative,
            "line 1: slotIndex: must be a whole number from 0 to 4294967295",
        ),
        (
            &huge,
            "line 1: slotIndex: must be a whole number from 0 to 4294967295",
        ),
        (&not_utf8, "line 1: is not UTF-8 text (column 12)"),
    ];
    for (file, expected) in record_level {
        let out = audit(&["--file", path(file)]);
        assert_eq!(out.status.code(), Some(2), "{file:?}");
        assert!(
            stdout(&out).contains(expected),
            "{file:?}: {}",
            stdout(&out)
        );
    }
}
