//! Appointment export files read one record at a time — a Kloqo JSON array, JSON Lines,
//! or CSV with the API's camelCase column names — for `slotguard watch import` and
//! `slotguard audit --file`. A bad record is reported and skipped; only a file that
//! cannot be read on (an I/O error, a truncated or malformed JSON array) stops reading.

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use indicatif::ProgressBar;
use serde::de::{Deserializer as _, SeqAccess, Visitor};
use serde_json::error::Category;
use serde_json::{Map, Value};

/// Reads of 64 KiB: a buffer well inside the core's L2 cache is filled by the kernel
/// three times faster than a 1 MiB one (measured: 0.07 s against 0.25 s of system
/// time per 500 MB), and the parser then finds it in cache.
const BUFFER_BYTES: usize = 1 << 16;
/// A progress bar moves in steps: updating it per record would cost more than reading
/// a small record.
const PROGRESS_STEP_BYTES: u64 = 1 << 20;
/// Enough of a file's start for [`Format::detect`] to see past blank lines.
const DETECT_BYTES: u64 = 4096;
/// Spreadsheet programs start UTF-8 files with a byte order mark; no parser wants it.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
/// CSV cells are text; these columns are numbers in the API and in Kloqo's documents.
const CSV_NUMBER_COLUMNS: [&str; 3] = ["slotIndex", "sessionIndex", "numericToken"];
/// ...and these are `true` or `false` (a patient moved by a break).
const CSV_BOOLEAN_COLUMNS: [&str; 1] = ["cancelledByBreak"];
/// Why a record that is valid JSON is still not an appointment.
const NOT_A_DOCUMENT: &str = "is not a JSON object (an appointment document)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON array of documents, as Kloqo exports them.
    #[value(alias = "json")]
    Kloqo,
    /// One JSON document per line.
    #[value(alias = "ndjson")]
    Jsonl,
    /// A header row of field names, then one appointment per row.
    Csv,
}

/// Why a file's format could not be told from the file itself.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read {}: {cause}", .path.display())]
    Unreadable {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot tell the format of {}; pass --format kloqo, jsonl or csv", .0.display())]
    Unknown(PathBuf),
}

impl Format {
    /// The format of `path` by its extension, else by its first bytes: `[` opens a
    /// Kloqo array, `{` a JSON Lines file, a first line with a comma is a CSV header.
    /// `None` when neither tells.
    pub fn detect(path: &Path, first_bytes: &[u8]) -> Option<Format> {
        let extension = path.extension().and_then(|e| e.to_str());
        match extension.map(str::to_ascii_lowercase).as_deref() {
            Some("json") => return Some(Format::Kloqo),
            Some("jsonl" | "ndjson") => return Some(Format::Jsonl),
            Some("csv") => return Some(Format::Csv),
            _ => {}
        }
        let text = first_bytes.strip_prefix(UTF8_BOM).unwrap_or(first_bytes);
        let text = text.trim_ascii_start();
        match text.first()? {
            b'[' => Some(Format::Kloqo),
            b'{' => Some(Format::Jsonl),
            _ => text
                .split(|b| *b == b'\n')
                .next()
                .filter(|header| header.contains(&b','))
                .map(|_| Format::Csv),
        }
    }

    /// [`Format::detect`] for the file at `path`, reading only its first bytes.
    pub fn of_file(path: &Path) -> Result<Format, FormatError> {
        let mut head = Vec::new();
        File::open(path)
            .and_then(|file| file.take(DETECT_BYTES).read_to_end(&mut head))
            .map_err(|cause| FormatError::Unreadable {
                path: path.to_owned(),
                cause,
            })?;
        Format::detect(path, &head).ok_or_else(|| FormatError::Unknown(path.to_owned()))
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Kloqo => "kloqo",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        }
    }
}

impl FromStr for Format {
    type Err = String;

    /// The names a `--format` flag accepts.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "kloqo" | "json" => Ok(Format::Kloqo),
            "jsonl" | "ndjson" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            _ => Err(format!(
                "unknown format {name:?}: use kloqo (a JSON array), jsonl or csv"
            )),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a record is in its file, as a person would look for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// 0-based index in a Kloqo array, as `jq '.[12]'` finds it.
    Index(usize),
    /// 1-based line; for CSV the line where the row starts.
    Line(u64),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Index(index) => write!(f, "record {index}"),
            Position::Line(line) => write!(f, "line {line}"),
        }
    }
}

/// One document read from a file; `document` is always a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub position: Position,
    pub document: Value,
}

/// A record that could not be read; the file is read on past it. `reason` never
/// quotes the record's content (it may hold names and phone numbers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{position}: {reason}")]
pub struct RecordError {
    pub position: Position,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records handed over as `Ok`.
    pub records: u64,
    /// Records handed over as `Err`.
    pub bad_records: u64,
    /// Bytes read: the file's size, as `read` reads every file to its end.
    pub bytes: u64,
}

/// A file that could not be read to its end. Records before the break were handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub path: PathBuf,
    /// How far the file had been read when reading stopped (reads are buffered, so
    /// this can be past the fault; `line` and `column` are exact); `None` when the
    /// file could not be opened.
    pub byte: Option<u64>,
    /// 1-based line of the fault, when the format knows it.
    pub line: Option<u64>,
    /// 1-based column (in bytes) of the fault in a JSON array.
    pub column: Option<u64>,
    /// The record being read when it stopped (Kloqo arrays).
    pub record: Option<Position>,
    pub reason: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)?;
        let mut at = Vec::new();
        at.extend(self.line.map(|line| format!("line {line}")));
        match (self.column, self.byte) {
            (Some(column), _) => at.push(format!("column {column}")),
            (None, Some(byte)) => at.push(format!("byte {byte}")),
            (None, None) => {}
        }
        at.extend(self.record.map(|record| format!("reading {record}")));
        if !at.is_empty() {
            write!(f, " ({})", at.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for FileError {}

/// A progress bar over a file's bytes, on stderr; reading the file gives it its length.
pub fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::no_length();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Reads `path` as `format`, handing each record to `on_record` as it is read.
pub fn read(
    path: &Path,
    format: Format,
    on_record: impl FnMut(Result<Record, RecordError>),
) -> Result<Summary, FileError> {
    read_with_progress(path, format, None, on_record)
}

/// [`read`], advancing `progress` by the bytes read (and giving it the file's size as
/// its length if it has none).
pub fn read_with_progress(
    path: &Path,
    format: Format,
    progress: Option<&ProgressBar>,
    on_record: impl FnMut(Result<Record, RecordError>),
) -> Result<Summary, FileError> {
    let bytes = Cell::new(0);
    let reading = Reading::new(path, &bytes, progress);
    let (input, start) = reading.open()?;
    let mut sink = Sink {
        reading,
        on_record,
        summary: Summary::default(),
    };
    match format {
        Format::Kloqo => read_kloqo(input, &mut sink)?,
        Format::Jsonl => read_jsonl(input, start, &mut sink)?,
        Format::Csv => read_csv(input, &mut sink)?,
    }
    Ok(sink.finish())
}

/// One line of a JSON Lines file, not yet parsed.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// 1-based.
    pub number: u64,
    /// Where the line starts in the file, for [`read_lines_at`].
    pub offset: u64,
    /// Without its `\n`.
    pub text: &'a [u8],
}

/// Reads `path` as JSON Lines, handing each line that is not blank to `on_line`
/// unparsed, for a reader that decodes only the fields it needs (`audit --file`).
/// Returns the bytes read.
pub fn read_lines(
    path: &Path,
    progress: Option<&ProgressBar>,
    mut on_line: impl FnMut(Line<'_>),
) -> Result<u64, FileError> {
    let bytes = Cell::new(0);
    let mut reading = Reading::new(path, &bytes, progress);
    let (input, start) = reading.open()?;
    split_lines(input, start, |line| {
        on_line(line);
        reading.tick();
    })
    .map_err(|(line, e)| reading.broken(Some(line), None, format!("cannot read the file: {e}")))?;
    Ok(reading.finish())
}

/// Reads again the lines that start at `offsets` (as [`Line::offset`] gave them),
/// in order, handing each offset and line (without its `\n`) to `on_line`.
pub fn read_lines_at(
    path: &Path,
    offsets: &[u64],
    mut on_line: impl FnMut(u64, &[u8]),
) -> Result<(), FileError> {
    let bytes = Cell::new(0);
    let reading = Reading::new(path, &bytes, None);
    let (mut input, start) = reading.open()?;
    let (mut at, mut text) = (start, Vec::new());
    for &offset in offsets {
        text.clear();
        // Seeking within the buffer keeps it, so close offsets cost no system call.
        let read = input
            .seek_relative(offset as i64 - at as i64)
            .and_then(|()| input.read_until(b'\n', &mut text))
            .map_err(|e| FileError {
                byte: Some(offset),
                ..reading.broken(None, None, format!("cannot read the file: {e}"))
            })?;
        at = offset + read as u64;
        let line = text.strip_suffix(b"\n").unwrap_or(&text);
        on_line(offset, line);
    }
    Ok(())
}

/// A reader that counts the bytes read from the file into a `Cell`, so progress can be
/// asked while serde_json's or csv's reader owns the input.
struct Counted<'a, R> {
    inner: R,
    bytes: &'a Cell<u64>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.set(self.bytes.get() + n as u64);
        Ok(n)
    }
}

/// For [`read_lines_at`], which skips what it does not read again.
impl<R: Seek> Seek for Counted<'_, R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.inner.seek(to)
    }
}

/// One file being read: how far it has got, for the progress bar and for saying where
/// a broken file broke.
struct Reading<'a> {
    path: &'a Path,
    bytes: &'a Cell<u64>,
    progress: Option<&'a ProgressBar>,
    /// Bytes already added to the progress bar.
    shown: u64,
}

impl<'a> Reading<'a> {
    fn new(path: &'a Path, bytes: &'a Cell<u64>, progress: Option<&'a ProgressBar>) -> Self {
        Reading {
            path,
            bytes,
            progress,
            shown: 0,
        }
    }

    /// The file, buffered, past any byte order mark, and the offset it starts at.
    fn open(&self) -> Result<(BufReader<Counted<'a, File>>, u64), FileError> {
        let file = File::open(self.path).map_err(|e| FileError {
            byte: None,
            ..self.broken(None, None, format!("cannot open the file: {e}"))
        })?;
        if let Some(bar) = self.progress.filter(|bar| bar.length().is_none()) {
            if let Ok(metadata) = file.metadata() {
                bar.set_length(metadata.len());
            }
        }
        // Counting beneath the buffer keeps std's fast byte-at-a-time path for
        // serde_json's reader, which a counting layer on top would lose (3× slower).
        let counted = Counted {
            inner: file,
            bytes: self.bytes,
        };
        let mut input = BufReader::with_capacity(BUFFER_BYTES, counted);
        let start = input
            .fill_buf()
            .map_err(|e| self.broken(None, None, format!("cannot read the file: {e}")))?;
        if start.starts_with(UTF8_BOM) {
            input.consume(UTF8_BOM.len());
            return Ok((input, UTF8_BOM.len() as u64));
        }
        Ok((input, 0))
    }

    fn tick(&mut self) {
        if let Some(bar) = self.progress {
            let read = self.bytes.get();
            if read - self.shown >= PROGRESS_STEP_BYTES {
                bar.inc(read - self.shown);
                self.shown = read;
            }
        }
    }

    /// The file broke here.
    fn broken(&self, line: Option<u64>, record: Option<Position>, reason: String) -> FileError {
        FileError {
            path: self.path.to_owned(),
            byte: Some(self.bytes.get()),
            line,
            column: None,
            record,
            reason,
        }
    }

    fn json_broken(
        &self,
        e: &serde_json::Error,
        record: Option<Position>,
        reason: String,
    ) -> FileError {
        FileError {
            line: Some(e.line() as u64),
            // serde_json gives column 0 at the end of the input, where the byte count
            // says more.
            column: (e.column() > 0).then_some(e.column() as u64),
            ..self.broken(None, record, reason)
        }
    }

    /// Bytes read in all.
    fn finish(self) -> u64 {
        let bytes = self.bytes.get();
        if let Some(bar) = self.progress {
            bar.inc(bytes - self.shown);
        }
        bytes
    }
}

/// Hands records to the caller, counting them and moving the progress bar.
struct Sink<'a, F> {
    reading: Reading<'a>,
    on_record: F,
    summary: Summary,
}

impl<F: FnMut(Result<Record, RecordError>)> Sink<'_, F> {
    fn record(&mut self, position: Position, document: Value) {
        if !document.is_object() {
            return self.bad(position, NOT_A_DOCUMENT);
        }
        self.summary.records += 1;
        (self.on_record)(Ok(Record { position, document }));
        self.reading.tick();
    }

    fn bad(&mut self, position: Position, reason: impl Into<String>) {
        self.summary.bad_records += 1;
        let reason = reason.into();
        (self.on_record)(Err(RecordError { position, reason }));
        self.reading.tick();
    }

    fn finish(self) -> Summary {
        Summary {
            bytes: self.reading.finish(),
            ..self.summary
        }
    }
}

/// Streams the array's elements one by one, so a large export is never a whole tree
/// in memory. A JSON array cannot be resynchronised after a syntax error, so any break
/// ends the file.
fn read_kloqo<R: Read, F: FnMut(Result<Record, RecordError>)>(
    input: R,
    sink: &mut Sink<'_, F>,
) -> Result<(), FileError> {
    let mut json = serde_json::Deserializer::from_reader(input);
    let mut current = None;
    let elements = Elements {
        sink: &mut *sink,
        current: &mut current,
    };
    if let Err(e) = json.deserialize_seq(elements) {
        let reason = match e.classify() {
            Category::Eof if current.is_none() => "the file holds no JSON array".to_owned(),
            Category::Eof => "the file ends inside the JSON array: is it truncated?".to_owned(),
            Category::Io => format!("cannot read the file: {}", json_message(&e)),
            Category::Syntax => format!("malformed JSON: {}", json_message(&e)),
            Category::Data => format!(
                "is not a JSON array of appointment documents as Kloqo exports them; \
                 for one document per line use the {} format",
                Format::Jsonl
            ),
        };
        return Err(sink
            .reading
            .json_broken(&e, current.map(Position::Index), reason));
    }
    json.end().map_err(|e| {
        let reason = "there is more after the end of the JSON array".to_owned();
        sink.reading.json_broken(&e, None, reason)
    })
}

struct Elements<'s, 'a, F> {
    sink: &'s mut Sink<'a, F>,
    /// The index of the element being read, once the array has opened.
    current: &'s mut Option<usize>,
}

impl<'de, F: FnMut(Result<Record, RecordError>)> Visitor<'de> for Elements<'_, '_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of appointment documents")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut elements: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            *self.current = Some(index);
            let Some(document) = elements.next_element::<Value>()? else {
                return Ok(());
            };
            self.sink.record(Position::Index(index), document);
            index += 1;
        }
    }
}

/// serde_json's message without its " at line L column C" suffix: callers say where.
fn json_message(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    message
        .strip_suffix(&position)
        .unwrap_or(&message)
        .to_owned()
}

/// One document per line; blank lines are skipped.
fn read_jsonl<R: BufRead, F: FnMut(Result<Record, RecordError>)>(
    input: R,
    start: u64,
    sink: &mut Sink<'_, F>,
) -> Result<(), FileError> {
    split_lines(input, start, |line| {
        let position = Position::Line(line.number);
        match serde_json::from_slice(line.text) {
            Ok(document) => sink.record(position, document),
            Err(e) => sink.bad(position, line_error(line.text, &e)),
        }
    })
    .map_err(|(line, e)| {
        let reason = format!("cannot read the file: {e}");
        sink.reading.broken(Some(line), None, reason)
    })
}

/// Why a JSON Lines line is not a document, without quoting it (it may hold names and
/// phone numbers).
pub fn line_error(line: &[u8], e: &serde_json::Error) -> String {
    match e.classify() {
        // A reader that wants an object and meets `42` or `[…]`.
        Category::Data if line.trim_ascii_start().first() != Some(&b'{') => {
            NOT_A_DOCUMENT.to_owned()
        }
        Category::Data => format!("{} (column {})", json_message(e), e.column()),
        _ => format!(
            "not valid JSON: {} (column {})",
            json_message(e),
            e.column()
        ),
    }
}

/// Splits `input` into lines, handing over each that is not blank. Lines are found in
/// the reader's large buffer and handed over in place; only a line straddling two
/// reads is copied. Fails with the line it was reading.
fn split_lines<R: BufRead>(
    mut input: R,
    start: u64,
    mut on_line: impl FnMut(Line<'_>),
) -> Result<(), (u64, io::Error)> {
    let mut emit = |number, offset, text: &[u8]| {
        if !text.trim_ascii().is_empty() {
            on_line(Line {
                number,
                offset,
                text,
            });
        }
    };
    // The line being read: its number and where it starts; `straddling` holds its
    // beginning when it began in an earlier read.
    let (mut number, mut offset) = (1, start);
    let mut straddling = Vec::new();
    // Where in the file `chunk` starts.
    let mut chunk_start = start;
    loop {
        let chunk = match input.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((number, e)),
        };
        if chunk.is_empty() {
            emit(number, offset, &straddling);
            return Ok(());
        }
        let mut from = 0;
        for end in memchr::memchr_iter(b'\n', chunk) {
            if straddling.is_empty() {
                emit(number, offset, &chunk[from..end]);
            } else {
                straddling.extend_from_slice(&chunk[from..end]);
                emit(number, offset, &straddling);
                straddling.clear();
            }
            from = end + 1;
            number += 1;
            offset = chunk_start + from as u64;
        }
        straddling.extend_from_slice(&chunk[from..]);
        let read = chunk.len();
        input.consume(read);
        chunk_start += read as u64;
    }
}

/// A header row of field names, then one document per row: empty cells are absent
/// fields, and the numeric and true/false columns become numbers and booleans when
/// they read as such (otherwise they stay text, for the document's parser to name).
fn read_csv<R: BufRead, F: FnMut(Result<Record, RecordError>)>(
    input: R,
    sink: &mut Sink<'_, F>,
) -> Result<(), FileError> {
    let input = RowLines {
        inner: input,
        line: 1,
        row_start: None,
    };
    // Rows of any length are accepted here, so that a short or long row is one bad
    // record rather than the end of the file.
    let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(input);
    let columns = match csv.byte_headers() {
        Ok(header) => column_names(header),
        Err(e) => Err(format!("cannot read the header: {e}")),
    }
    .map_err(|reason| {
        let line = csv.get_ref().row_start.unwrap_or(1);
        sink.reading.broken(Some(line), None, reason)
    })?;
    csv.get_mut().row_start = None;
    let mut row = csv::ByteRecord::new();
    loop {
        let more = csv.read_byte_record(&mut row).map_err(|e| {
            let line = Some(csv.get_ref().line);
            sink.reading
                .broken(line, None, format!("cannot read the file: {e}"))
        })?;
        if !more {
            return Ok(());
        }
        let lines = csv.get_mut();
        let position = Position::Line(lines.row_start.take().unwrap_or(lines.line));
        if row.len() != columns.len() {
            let reason = format!(
                "has {} fields where the header has {}",
                row.len(),
                columns.len()
            );
            sink.bad(position, reason);
            continue;
        }
        match csv_document(&columns, &row) {
            Ok(document) => sink.record(position, document),
            Err(reason) => sink.bad(position, reason),
        }
    }
}

/// Hands the csv reader one line per read, so that when a row is complete nothing of
/// the next one has been read and the row's first line is known. (The csv crate numbers
/// a row from where the previous one ended, which is wrong after blank lines.)
struct RowLines<R> {
    inner: R,
    /// The line the next byte handed out is on.
    line: u64,
    /// The first line with content since the last row was taken.
    row_start: Option<u64>,
}

impl<R: BufRead> Read for RowLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.inner.fill_buf()?;
        let line_end = available
            .iter()
            .position(|b| *b == b'\n')
            .map_or(available.len(), |i| i + 1);
        let n = line_end.min(buf.len());
        let chunk = &available[..n];
        if self.row_start.is_none() && chunk.iter().any(|b| !matches!(b, b'\r' | b'\n')) {
            self.row_start = Some(self.line);
        }
        if chunk.last() == Some(&b'\n') {
            self.line += 1;
        }
        buf[..n].copy_from_slice(chunk);
        self.inner.consume(n);
        Ok(n)
    }
}

/// The header's field names, trimmed (spreadsheets like `id, clinicId`).
fn column_names(header: &csv::ByteRecord) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::with_capacity(header.len());
    for (i, raw) in header.iter().enumerate() {
        let name = std::str::from_utf8(raw)
            .map_err(|_| format!("column {} of the header is not UTF-8 text", i + 1))?
            .trim();
        if name.is_empty() {
            return Err(format!("column {} of the header has no name", i + 1));
        }
        if names.iter().any(|n| n == name) {
            return Err(format!("column {name:?} appears twice in the header"));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

fn csv_document(columns: &[String], row: &csv::ByteRecord) -> Result<Value, String> {
    let mut document = Map::new();
    for (name, cell) in columns.iter().zip(row) {
        if cell.is_empty() {
            continue;
        }
        let text =
            std::str::from_utf8(cell).map_err(|_| format!("the {name} cell is not UTF-8 text"))?;
        let column = name.as_str();
        let typed = if CSV_NUMBER_COLUMNS.contains(&column) {
            text.trim().parse::<i64>().ok().map(Value::from)
        } else if CSV_BOOLEAN_COLUMNS.contains(&column) {
            // Spreadsheets write TRUE and FALSE.
            let text = text.trim();
            ["true", "false"]
                .into_iter()
                .find(|b| text.eq_ignore_ascii_case(b))
                .map(|b| Value::Bool(b == "true"))
        } else {
            None
        };
        document.insert(name.clone(), typed.unwrap_or_else(|| Value::from(text)));
    }
    Ok(Value::Object(document))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::watch::kloqo::{parse_document, tests::sample_exports};

    /// Everything `read` handed over, and its result.
    struct Outcome {
        records: Vec<Record>,
        errors: Vec<RecordError>,
        result: Result<Summary, FileError>,
    }

    fn read_all(path: &Path, format: Format) -> Outcome {
        let (mut records, mut errors) = (Vec::new(), Vec::new());
        let result = read(path, format, |r| match r {
            Ok(record) => records.push(record),
            Err(error) => errors.push(error),
        });
        Outcome {
            records,
            errors,
            result,
        }
    }

    fn write(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Flat appointments, so CSV can hold them exactly: text, the three numeric
    /// columns, a missing field, a cell that needs quoting, a break block.
    fn appointments() -> Vec<Value> {
        let base = |id: &str, slot: u32, token: &str| {
            json!({
                "id": id,
                "clinicId": "LhfG8x4SZZg1BLmCkpYF",
                "doctorId": "doc-1766066333627-yjug38zsr",
                "date": "18 January 2026",
                "sessionIndex": slot / 1000,
                "slotIndex": slot,
                "numericToken": slot + 1,
                "tokenNumber": token,
                "status": "Pending",
                "bookedVia": "Online",
                "createdAt": "2026-01-18T08:53:13.493Z"
            })
        };
        let mut walk_in = base("walk-in-1", 4, "W1-118");
        walk_in["bookedVia"] = json!("Front desk, \"counter 2\"");
        walk_in["numericToken"] = json!(118);
        let mut no_channel = base("A1b2C3d4E5f6G7h8I9j0", 1005, "A2-1006");
        no_channel.as_object_mut().unwrap().remove("bookedVia");
        let mut break_block = base("break-1", 1010, "Break");
        break_block["bookedVia"] = json!("BreakBlock");
        break_block["numericToken"] = json!(0);
        vec![walk_in, no_channel, break_block]
    }

    const CSV_COLUMNS: [&str; 11] = [
        "id",
        "clinicId",
        "doctorId",
        "date",
        "sessionIndex",
        "slotIndex",
        "numericToken",
        "tokenNumber",
        "status",
        "bookedVia",
        "createdAt",
    ];

    fn as_csv(documents: &[Value]) -> Vec<u8> {
        // As a spreadsheet program saves it: with a byte order mark.
        let mut out = csv::Writer::from_writer(UTF8_BOM.to_vec());
        out.write_record(CSV_COLUMNS).unwrap();
        for doc in documents {
            out.write_record(CSV_COLUMNS.map(|c| match &doc[c] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }))
            .unwrap();
        }
        out.into_inner().unwrap()
    }

    #[test]
    fn the_three_formats_give_the_same_documents() {
        let dir = tempfile::tempdir().unwrap();
        let expected = appointments();
        let jsonl: String = expected.iter().map(|d| format!("{d}\n\n")).collect();
        let files = [
            (
                write(
                    &dir,
                    "export.json",
                    &serde_json::to_vec_pretty(&expected).unwrap(),
                ),
                Format::Kloqo,
                [Position::Index(0), Position::Index(1), Position::Index(2)],
            ),
            (
                write(&dir, "export.jsonl", jsonl.as_bytes()),
                Format::Jsonl,
                [Position::Line(1), Position::Line(3), Position::Line(5)],
            ),
            (
                write(&dir, "export.csv", &as_csv(&expected)),
                Format::Csv,
                [Position::Line(2), Position::Line(3), Position::Line(4)],
            ),
        ];
        for (path, format, positions) in files {
            let outcome = read_all(&path, format);
            let summary = outcome.result.unwrap();
            assert_eq!(outcome.errors, [], "{format}");
            let documents: Vec<_> = outcome.records.iter().map(|r| r.document.clone()).collect();
            assert_eq!(documents, expected, "{format}");
            let read_positions: Vec<_> = outcome.records.iter().map(|r| r.position).collect();
            assert_eq!(read_positions, positions, "{format}");
            let file_size = std::fs::metadata(&path).unwrap().len();
            assert_eq!(
                summary,
                Summary {
                    records: 3,
                    bad_records: 0,
                    bytes: file_size
                }
            );
            for record in &outcome.records {
                parse_document(&record.document).unwrap();
            }
        }
    }

    #[test]
    fn every_sample_export_reads_as_a_kloqo_array_with_progress_to_its_size() {
        for path in sample_exports() {
            let size = std::fs::metadata(&path).unwrap().len();
            let bar = ProgressBar::hidden();
            let mut records = 0;
            let summary = read_with_progress(&path, Format::Kloqo, Some(&bar), |record| {
                let record = record.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(record.position, Position::Index(records));
                records += 1;
            })
            .unwrap();
            assert!(records > 0);
            assert_eq!(
                summary,
                Summary {
                    records: records as u64,
                    bad_records: 0,
                    bytes: size
                }
            );
            assert_eq!((bar.position(), bar.length()), (size, Some(size)));
        }
    }

    #[test]
    fn a_truncated_kloqo_export_is_a_file_error_where_it_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let sample = &sample_exports()[0];
        let whole = std::fs::read(sample).unwrap();
        let cut = whole.len() / 2;
        let path = write(&dir, "cut.json", &whole[..cut]);

        let outcome = read_all(&path, Format::Kloqo);
        let error = outcome.result.unwrap_err();
        let read_before = outcome.records.len();
        assert!(read_before > 0 && outcome.errors.is_empty());
        assert_eq!(error.byte, Some(cut as u64));
        assert_eq!(error.record, Some(Position::Index(read_before)));
        assert!(error.line.is_some_and(|line| line > 1));
        assert!(error.reason.contains("truncated"), "{error}");
        let message = error.to_string();
        assert!(message.contains("line "), "{message}");
        assert!(
            message.contains(&format!("record {read_before}")),
            "{message}"
        );
    }

    #[test]
    fn a_kloqo_file_that_is_not_one_whole_array_is_a_file_error() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[u8], &str); 4] = [
            (
                br#"{"id": "x"}"#,
                "is not a JSON array of appointment documents",
            ),
            (
                br#"[{"id": "x"}] ["#,
                "more after the end of the JSON array (line 1, column 15)",
            ),
            (
                b"[\n {\"id\": \"x\"},\n , {}]",
                "malformed JSON: expected value (line 3, column 2, reading record 1)",
            ),
            (b" \n", "holds no JSON array (line 2, byte 2)"),
        ];
        for (content, expected) in cases {
            let path = write(&dir, "bad.json", content);
            let error = read_all(&path, Format::Kloqo).result.unwrap_err();
            assert!(error.to_string().contains(expected), "{error}");
        }
        let path = write(&dir, "empty-array.json", b"[]\n");
        assert_eq!(read_all(&path, Format::Kloqo).result.unwrap().records, 0);
    }

    #[test]
    fn a_bad_json_line_is_reported_with_its_line_number_and_the_rest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let content =
            "{\"id\": \"a\"}\n\n{\"id\": \"b\", oops}\n   \n42\r\n{\"id\": \"c\"}\r\n{\"id\": ";
        let path = write(&dir, "export.jsonl", content.as_bytes());
        let outcome = read_all(&path, Format::Jsonl);
        let summary = outcome.result.unwrap();
        let good: Vec<_> = outcome
            .records
            .iter()
            .map(|r| (r.position, r.document["id"].clone()))
            .collect();
        assert_eq!(
            good,
            [
                (Position::Line(1), json!("a")),
                (Position::Line(6), json!("c"))
            ]
        );
        let bad: Vec<_> = outcome.errors.iter().map(|e| e.position).collect();
        assert_eq!(
            bad,
            [Position::Line(3), Position::Line(5), Position::Line(7)]
        );
        assert!(
            outcome.errors[0].reason.contains("column"),
            "{}",
            outcome.errors[0]
        );
        assert!(
            !outcome.errors[0].reason.contains("oops"),
            "record content is not quoted"
        );
        assert_eq!((summary.records, summary.bad_records), (2, 3));
    }

    #[test]
    fn lines_come_with_numbers_and_offsets_that_find_them_again_across_reads() {
        // Lines straddle reads, one is longer than a whole read; with a byte order
        // mark, CRLF and blank lines, and no newline at the end.
        let mut content = UTF8_BOM.to_vec();
        let long = format!(
            r#"{{"id": "long", "pad": "{}"}}"#,
            "y".repeat(BUFFER_BYTES * 3 / 2)
        );
        let mut expected = vec![(1, content.len() as u64, long.clone().into_bytes())];
        content.extend_from_slice(long.as_bytes());
        content.push(b'\n');
        let mut number = 2u64;
        while content.len() < 4 * BUFFER_BYTES + 1000 {
            if number.is_multiple_of(7) {
                content.extend_from_slice(b"  \r\n");
            } else {
                let mut text = format!(
                    r#"{{"id": "{number}", "pad": "{}"}}"#,
                    "x".repeat((number % 997) as usize)
                );
                if number.is_multiple_of(3) {
                    text.push('\r');
                }
                expected.push((number, content.len() as u64, text.clone().into_bytes()));
                content.extend_from_slice(text.as_bytes());
                content.push(b'\n');
            }
            number += 1;
        }
        expected.push((number, content.len() as u64, br#"{"id": "last"}"#.to_vec()));
        content.extend_from_slice(br#"{"id": "last"}"#);
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "lines.jsonl", &content);

        let mut seen = Vec::new();
        let bytes = read_lines(&path, None, |line| {
            seen.push((line.number, line.offset, line.text.to_vec()));
        })
        .unwrap();
        assert_eq!(bytes, content.len() as u64);
        assert!(
            seen == expected,
            "{} lines read, {} expected",
            seen.len(),
            expected.len()
        );

        let wanted: Vec<_> = expected.iter().step_by(5).collect();
        let offsets: Vec<u64> = wanted.iter().map(|(_, offset, _)| *offset).collect();
        let mut again = Vec::new();
        read_lines_at(&path, &offsets, |offset, text| {
            again.push((offset, text.to_vec()))
        })
        .unwrap();
        let wanted: Vec<_> = wanted
            .iter()
            .map(|(_, o, text)| (*o, text.clone()))
            .collect();
        assert!(again == wanted, "lines read again differ");
    }

    #[test]
    fn csv_true_and_false_cells_are_booleans_where_the_api_has_booleans() {
        let dir = tempfile::tempdir().unwrap();
        let content =
            "id,cancelledByBreak,status\na,TRUE,Completed\nb,false,Pending\nc,yes,Pending\n";
        let path = write(&dir, "moved.csv", content.as_bytes());
        let outcome = read_all(&path, Format::Csv);
        let moved: Vec<_> = outcome
            .records
            .iter()
            .map(|r| r.document["cancelledByBreak"].clone())
            .collect();
        assert_eq!(moved, [json!(true), json!(false), json!("yes")]);
    }

    #[test]
    fn a_csv_row_with_the_wrong_number_of_fields_is_reported_and_the_rest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let content =
            "id, slotIndex ,status\na,5,Pending\nb,6\n\nc,five,Cancelled\nd,7,Pending,extra\n";
        let path = write(&dir, "export.csv", content.as_bytes());
        let outcome = read_all(&path, Format::Csv);
        assert_eq!(outcome.result.unwrap().bad_records, 2);
        let bad: Vec<_> = outcome.errors.iter().map(|e| e.position).collect();
        assert_eq!(bad, [Position::Line(3), Position::Line(6)]);
        let good: Vec<_> = outcome
            .records
            .iter()
            .map(|r| (r.position, r.document.clone()))
            .collect();
        assert_eq!(
            good,
            [
                (
                    Position::Line(2),
                    json!({"id": "a", "slotIndex": 5, "status": "Pending"})
                ),
                (
                    Position::Line(5),
                    json!({"id": "c", "slotIndex": "five", "status": "Cancelled"})
                ),
            ]
        );
        assert_eq!(parse_document(&good[1].1).unwrap_err().field, "clinicId");

        let path = write(&dir, "twice.csv", b"\nid,status,id\na,Pending,b\n");
        let error = read_all(&path, Format::Csv).result.unwrap_err();
        assert_eq!(error.line, Some(2), "{error}");
        assert!(error.reason.contains("twice"), "{error}");

        let path = write(&dir, "empty.csv", b"");
        assert_eq!(
            read_all(&path, Format::Csv).result.unwrap(),
            Summary::default()
        );
    }

    #[test]
    fn formats_are_known_by_extension_then_by_first_bytes() {
        let detect = |name: &str, start: &[u8]| Format::detect(Path::new(name), start);
        assert_eq!(detect("x.json", b"{"), Some(Format::Kloqo));
        assert_eq!(detect("x.JSONL", b"["), Some(Format::Jsonl));
        assert_eq!(detect("x.ndjson", b""), Some(Format::Jsonl));
        assert_eq!(detect("x.csv", b"["), Some(Format::Csv));
        assert_eq!(detect("export", b"\xEF\xBB\xBF\n  [{"), Some(Format::Kloqo));
        assert_eq!(detect("export.txt", b"{\"id\": 1}\n"), Some(Format::Jsonl));
        assert_eq!(
            detect("export.txt", b"id,clinicId\na,b\n"),
            Some(Format::Csv)
        );
        assert_eq!(detect("export.txt", b"hello\nworld,"), None);
        assert_eq!(detect("export", b""), None);
        for format in [Format::Kloqo, Format::Jsonl, Format::Csv] {
            assert_eq!(format.name().parse(), Ok(format));
        }
        assert!("xml".parse::<Format>().is_err());
    }

    #[test]
    fn a_missing_file_is_a_file_error_without_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let error = read_all(&dir.path().join("nope.json"), Format::Kloqo)
            .result
            .unwrap_err();
        assert_eq!(error.byte, None);
        assert!(error.to_string().contains("cannot open"), "{error}");
    }
}
