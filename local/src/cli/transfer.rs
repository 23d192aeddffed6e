//! `conveyor export` and `conveyor import`: a tenant's jobs out of one deployment as JSON Lines
//! (each line a job with its payload, result, log and steps; oldest first, so a job comes after
//! the jobs it depends on) and into another under the same ids. A finished job is taken in as it
//! ended and never runs again; a queued or running one is queued again there.

use super::client::{item_error, Client, Connection, Scope, Usage};
use anyhow::Context;
use serde_json::{json, Value};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};

/// Jobs an export asks for a page.
const EXPORT_PAGE: usize = 25;
/// Most jobs and bytes of one import request (the API takes up to 100 and 5 MB).
const IMPORT_CHUNK: usize = 25;
const IMPORT_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// How long one page of an export or an import may take.
const PAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// Ids one export request names.
const IDS_A_REQUEST: usize = 100;

/// `conveyor export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Only jobs in this status (waiting, scheduled, queued, running, succeeded, failed, dead,
    /// cancelled)
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// Only jobs of this type
    #[arg(long = "type", value_name = "TYPE")]
    pub job_type: Option<String>,
    /// Only jobs created at or after this time (RFC 3339)
    #[arg(long, value_name = "TIME")]
    pub created_after: Option<String>,
    /// Only jobs created before this time (RFC 3339)
    #[arg(long, value_name = "TIME")]
    pub created_before: Option<String>,
    /// Only these jobs (repeat it, or separate ids with commas)
    #[arg(long = "id", value_name = "ID", value_delimiter = ',')]
    pub ids: Vec<String>,
    /// Write to this file instead of standard output
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub connection: Connection,
}

/// `conveyor import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// A file `conveyor export` wrote (`-`: standard input)
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub connection: Connection,
}

pub async fn export(a: ExportArgs) -> anyhow::Result<u8> {
    let mut c = Client::new(&a.connection, Some(&a.scope))?;
    c.request_timeout = PAGE_TIMEOUT;
    let filter: Vec<(&str, String)> = [
        ("status", a.status.clone()),
        ("type", a.job_type.clone()),
        ("created_after", a.created_after.clone()),
        ("created_before", a.created_before.clone()),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v?)))
    .collect();
    // The pages come newest first: each is kept, its lines turned oldest first, in a spool
    // file; the pages are then written out last page first.
    let mut spool = tempfile::tempfile().context("a temporary file for the export")?;
    let mut pages: Vec<(u64, u64)> = vec![];
    let mut count = 0usize;
    let mut spool_page = |jobs: &[Value], pages: &mut Vec<(u64, u64)>| -> anyhow::Result<()> {
        let start = spool.stream_position()?;
        for job in jobs.iter().rev() {
            writeln!(spool, "{job}")?;
        }
        pages.push((start, spool.stream_position()? - start));
        count += jobs.len();
        Ok(())
    };
    if a.ids.is_empty() {
        let mut cursor: Option<String> = None;
        loop {
            let mut query = filter.clone();
            query.push(("limit", EXPORT_PAGE.to_string()));
            if let Some(cursor) = cursor.take() {
                query.push(("cursor", cursor));
            }
            let page = c.get("/v1/jobs/export", &query).await?;
            spool_page(
                page["jobs"].as_array().map_or(&[][..], Vec::as_slice),
                &mut pages,
            )?;
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
        }
    } else {
        let mut ids = a.ids.clone();
        ids.sort();
        ids.dedup();
        // (each request's page is newest first; the chunks go oldest first, so the last chunk
        // is spooled first)
        for chunk in ids.chunks(IDS_A_REQUEST).rev() {
            let mut query = filter.clone();
            query.push(("ids", chunk.join(",")));
            let page = c.get("/v1/jobs/export", &query).await?;
            spool_page(
                page["jobs"].as_array().map_or(&[][..], Vec::as_slice),
                &mut pages,
            )?;
        }
    }
    let mut out: Box<dyn Write> = match &a.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    for (start, len) in pages.into_iter().rev() {
        spool.seek(SeekFrom::Start(start))?;
        let mut block = vec![0; len as usize];
        spool.read_exact(&mut block)?;
        out.write_all(&block)?;
    }
    out.flush()?;
    let written = json!({ "exported": count });
    match (&a.output, c.json) {
        (Some(_), true) => println!("{written}"),
        (Some(path), false) => println!("exported {count} jobs to {}", path.display()),
        // (the jobs are on standard output: the count goes to the terminal, not into them)
        (None, _) => eprintln!("exported {count} jobs"),
    }
    Ok(0)
}

pub async fn import(a: ImportArgs) -> anyhow::Result<u8> {
    let mut c = Client::new(&a.connection, Some(&a.scope))?;
    c.request_timeout = PAGE_TIMEOUT;
    let input: Box<dyn BufRead> = if a.file.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin().lock()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&a.file)
                .with_context(|| format!("opening {}", a.file.display()))?,
        ))
    };
    let mut totals: std::collections::BTreeMap<String, u64> =
        ["imported", "exists", "expired", "failed"]
            .into_iter()
            .map(|k| (k.to_string(), 0))
            .collect();
    let mut failures = vec![];
    let mut chunk: Vec<Value> = vec![];
    let mut chunk_bytes = 0;
    let mut first_line = 1;
    let mut lines = input.lines().enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        let line = line.context("reading the export")?;
        if !line.trim().is_empty() {
            let job: Value = serde_json::from_str(&line).map_err(|e| {
                Usage(format!(
                    "line {}: not a job as `conveyor export` writes it: {e}",
                    i + 1
                ))
            })?;
            chunk_bytes += line.len();
            chunk.push(job);
        }
        let last = lines.peek().is_none();
        if chunk.len() == IMPORT_CHUNK
            || chunk_bytes >= IMPORT_CHUNK_BYTES
            || (last && !chunk.is_empty())
        {
            let sent = std::mem::take(&mut chunk);
            let answer = c
                .post("/v1/jobs/import", Some(json!({ "jobs": sent })))
                .await
                .with_context(|| format!("importing the jobs from line {first_line}"))?;
            for (k, v) in answer.as_object().into_iter().flatten() {
                if let (Some(total), Some(n)) = (totals.get_mut(k), v.as_u64()) {
                    *total += n;
                }
            }
            failures.extend(
                answer["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| r["outcome"] == "failed")
                    .map(item_error),
            );
            chunk_bytes = 0;
            first_line = i + 2;
        }
    }
    let summary = json!(totals);
    c.print(&summary, |_| {
        let mut lines = vec![format!(
            "imported {}, already here {}, expired {}, failed {}",
            totals["imported"], totals["exists"], totals["expired"], totals["failed"]
        )];
        lines.extend(failures.iter().map(|f| format!("  {f}")));
        lines.join("\n")
    });
    Ok(if totals["failed"] > 0 { 1 } else { 0 })
}
