//! What operators graph: counters and latency histograms kept in the process, shown in
//! Prometheus's text format (the local runtime's `GET /metrics`) or written as CloudWatch
//! embedded-metric-format log lines (each Lambda invocation's, as deltas).
//!
//! Recorded where each thing happens once: HTTP requests by route and code (the router's
//! guard), submit latency (the same, for `POST /v1/jobs`), each job change by type and status,
//! retries and dead letters (the lifecycle's one path), and run time by type (the worker).

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

/// Histogram bucket bounds, in seconds.
const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Per bound, observations at or below it (not cumulative; made so on output).
    buckets: [u64; BOUNDS.len()],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    counters: BTreeMap<(&'static str, Labels), u64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
}

/// The process's figures.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// A value read when the figures are shown (queue depths, job counts).
#[derive(Debug, Clone)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Labels,
    pub value: f64,
}

/// What each figure is, for Prometheus's `# HELP`.
const HELP: &[(&str, &str, &str)] = &[
    (
        "conveyor_http_requests_total",
        "counter",
        "HTTP requests by route, method and status code",
    ),
    (
        "conveyor_http_request_seconds",
        "histogram",
        "HTTP request time by route",
    ),
    (
        "conveyor_submit_seconds",
        "histogram",
        "time to accept a job (POST /v1/jobs), durable when answered",
    ),
    (
        "conveyor_job_changes_total",
        "counter",
        "job changes stored, by type and the status they led to",
    ),
    (
        "conveyor_job_retries_total",
        "counter",
        "failed attempts that went back to the queue, by type",
    ),
    (
        "conveyor_dead_letters_total",
        "counter",
        "jobs ended dead because their message reached the dead-letter queue, by type",
    ),
    (
        "conveyor_job_run_seconds",
        "histogram",
        "time a job's handler ran, by type and outcome",
    ),
];

/// The figures of this process.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

impl Metrics {
    pub fn count(&self, name: &'static str, pairs: &[(&'static str, &str)], by: u64) {
        *self
            .inner
            .lock()
            .unwrap()
            .counters
            .entry((name, labels(pairs)))
            .or_default() += by;
    }

    pub fn observe(&self, name: &'static str, pairs: &[(&'static str, &str)], seconds: f64) {
        let mut inner = self.inner.lock().unwrap();
        let h = inner.histograms.entry((name, labels(pairs))).or_default();
        if let Some(i) = BOUNDS.iter().position(|b| seconds <= *b) {
            h.buckets[i] += 1;
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// Everything in Prometheus's text format, `gauges` first.
    pub fn prometheus(&self, gauges: &[Gauge]) -> String {
        let inner = self.inner.lock().unwrap();
        let mut out = String::new();
        let render = |labels: &Labels, extra: Option<(&str, String)>| {
            let mut parts: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            if let Some((k, v)) = extra {
                parts.push(format!("{k}=\"{v}\""));
            }
            if parts.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", parts.join(","))
            }
        };
        let mut last = "";
        for g in gauges {
            if g.name != last {
                out.push_str(&format!(
                    "# HELP {} {}\n# TYPE {} gauge\n",
                    g.name, g.help, g.name
                ));
                last = g.name;
            }
            out.push_str(&format!(
                "{}{} {}\n",
                g.name,
                render(&g.labels, None),
                g.value
            ));
        }
        for (name, kind, help) in HELP {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for ((n, labels), v) in &inner.counters {
                if n == name {
                    out.push_str(&format!("{name}{} {v}\n", render(labels, None)));
                }
            }
            for ((n, labels), h) in &inner.histograms {
                if n != name {
                    continue;
                }
                let mut cumulative = 0;
                for (bound, n) in BOUNDS.iter().zip(h.buckets) {
                    cumulative += n;
                    out.push_str(&format!(
                        "{name}_bucket{} {cumulative}\n",
                        render(labels, Some(("le", bound.to_string())))
                    ));
                }
                out.push_str(&format!(
                    "{name}_bucket{} {}\n",
                    render(labels, Some(("le", "+Inf".into()))),
                    h.count
                ));
                out.push_str(&format!("{name}_sum{} {}\n", render(labels, None), h.sum));
                out.push_str(&format!(
                    "{name}_count{} {}\n",
                    render(labels, None),
                    h.count
                ));
            }
        }
        out
    }

    /// The figures since the last call as CloudWatch embedded-metric-format lines (one per
    /// metric and set of labels; histograms as values and counts), and start over.
    pub fn take_emf(&self, namespace: &str, now_ms: i64) -> Vec<String> {
        let (counters, histograms) = {
            let mut inner = self.inner.lock().unwrap();
            (
                std::mem::take(&mut inner.counters),
                std::mem::take(&mut inner.histograms),
            )
        };
        let line = |name: &str, labels: &Labels, unit: &str, value: serde_json::Value| {
            let mut o = serde_json::Map::new();
            let dims: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
            o.insert(
                "_aws".into(),
                serde_json::json!({
                    "Timestamp": now_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": namespace,
                        "Dimensions": [dims],
                        "Metrics": [{ "Name": name, "Unit": unit }],
                    }],
                }),
            );
            for (k, v) in labels {
                o.insert(k.to_string(), serde_json::Value::String(v.clone()));
            }
            o.insert(name.into(), value);
            serde_json::Value::Object(o).to_string()
        };
        let mut out = vec![];
        for ((name, labels), v) in &counters {
            out.push(line(name, labels, "Count", serde_json::json!(v)));
        }
        for ((name, labels), h) in &histograms {
            // Each bucket as one value (its bound) with its count: CloudWatch's own format for
            // many observations in one line.
            let (values, counts): (Vec<f64>, Vec<u64>) = BOUNDS
                .iter()
                .zip(h.buckets)
                .filter(|(_, n)| *n > 0)
                .map(|(b, n)| (*b, n))
                .unzip();
            if values.is_empty() {
                continue;
            }
            out.push(line(
                name,
                labels,
                "Seconds",
                serde_json::json!({ "Values": values, "Counts": counts }),
            ));
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Write this invocation's figures to stdout as embedded-metric-format lines (Lambda sends
/// stdout to CloudWatch Logs, which turns them into metrics).
pub fn flush_emf() {
    let now = chrono::Utc::now().timestamp_millis();
    for line in global().take_emf("Conveyor", now) {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_show_in_prometheus_text_and_as_emf_deltas() {
        let m = Metrics::default();
        m.count(
            "conveyor_job_changes_total",
            &[("type", "noop"), ("status", "succeeded")],
            2,
        );
        m.observe("conveyor_job_run_seconds", &[("type", "noop")], 0.003);
        m.observe("conveyor_job_run_seconds", &[("type", "noop")], 0.2);
        let text = m.prometheus(&[Gauge {
            name: "conveyor_queue_depth",
            help: "messages waiting",
            labels: vec![("queue", "q".into())],
            value: 7.0,
        }]);
        assert!(
            text.contains("conveyor_queue_depth{queue=\"q\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("conveyor_job_changes_total{type=\"noop\",status=\"succeeded\"} 2\n"));
        assert!(text.contains("conveyor_job_run_seconds_bucket{type=\"noop\",le=\"0.005\"} 1\n"));
        assert!(text.contains("conveyor_job_run_seconds_bucket{type=\"noop\",le=\"0.25\"} 2\n"));
        assert!(text.contains("conveyor_job_run_seconds_count{type=\"noop\"} 2\n"));
        let lines = m.take_emf("Conveyor", 1);
        assert_eq!(lines.len(), 2);
        let counter: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(counter["conveyor_job_changes_total"], 2);
        assert_eq!(counter["status"], "succeeded");
        assert_eq!(
            counter["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
            serde_json::json!(["type", "status"])
        );
        let histogram: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(
            histogram["conveyor_job_run_seconds"],
            serde_json::json!({ "Values": [0.005, 0.25], "Counts": [1, 1] })
        );
        assert!(m.take_emf("Conveyor", 2).is_empty(), "deltas: taken once");
    }
}
