//! The comparison table (one row per measure), the targets with PASS/MISS, and the
//! same as JSON. Targets are informational: nothing here fails the run.

use serde_json::{json, Value};

use crate::workload::{ServerResult, Tool};

/// Figures measured in-process on this machine, used by some targets.
pub struct Reference {
    pub sha256_s_per_gib: f64,
    pub loopback_mb_s: f64,
    /// The bench's own client pushing into a null sink.
    pub client_push_mb_s: f64,
    /// curl pulling from a null source (the pulls are timed with curl).
    pub client_pull_mb_s: f64,
}

pub enum Target {
    None,
    /// specreg / distribution at least this.
    RatioAtLeast(f64),
    /// Value strictly below this (same unit as the row).
    Below(f64, &'static str),
    /// Server CPU per GiB at most `factor` times the SHA-256 cost alone.
    CpuWithinSha { factor: f64, sha: f64 },
    /// Ratio at least `ratio` and the value at least `frac` of the loopback limit.
    Pull { ratio: f64, frac: f64, loopback: f64 },
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::None => "-".into(),
            Target::RatioAtLeast(r) => format!(">= {r}x"),
            Target::Below(v, unit) => format!("< {v} {unit}"),
            Target::CpuWithinSha { factor, sha } => format!("<= {factor}x SHA = {:.2}", factor * sha),
            Target::Pull { ratio, frac, loopback } => {
                format!(">= {ratio}x & >= {:.0}% lo = {:.0}", frac * 100.0, frac * loopback)
            }
        }
    }

    fn verdict(&self, dist: Option<f64>, value: Option<f64>) -> Option<bool> {
        let v = value?;
        match self {
            Target::None => None,
            Target::RatioAtLeast(r) => Some(v / dist? >= *r),
            Target::Below(max, _) => Some(v < *max),
            Target::CpuWithinSha { factor, sha } => Some(v <= factor * sha),
            Target::Pull { ratio, frac, loopback } => {
                let lo_ok = v >= frac * loopback;
                match dist {
                    Some(d) => Some(lo_ok && v / d >= *ratio),
                    None => Some(lo_ok),
                }
            }
        }
    }
}

pub struct Row {
    /// Stable identifier for the JSON output.
    pub id: String,
    pub measure: String,
    /// distribution, specreg fsync, specreg no-fsync.
    pub values: [Option<f64>; 3],
    pub target: Target,
}

impl Row {
    fn ratio(&self, i: usize) -> Option<f64> {
        match (self.values[0], self.values[i]) {
            (Some(d), Some(s)) if d > 0.0 => Some(s / d),
            _ => None,
        }
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if !v.is_finite() => "inf".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) if v.abs() >= 1.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.3}"),
    }
}

fn ratio_text(r: Option<f64>) -> String {
    match r {
        None => "-".into(),
        Some(r) if r >= 10.0 => format!("{r:.1}x"),
        Some(r) => format!("{r:.2}x"),
    }
}

fn verdict_text(v: Option<bool>) -> &'static str {
    match v {
        None => "-",
        Some(true) => "PASS",
        Some(false) => "MISS",
    }
}

/// The sizes of a run's workload, as the row labels name them.
pub struct Shape<'a> {
    pub blob_mib: u64,
    pub chunk_mib: u64,
    pub small: usize,
    pub manifests: usize,
    pub concurrency: usize,
    pub connections: &'a [u32],
}

/// The rows, from whatever was measured.
pub fn rows(res: [Option<&ServerResult>; 3], reference: &Reference, shape: &Shape<'_>) -> Vec<Row> {
    let Shape {
        blob_mib,
        chunk_mib,
        small,
        manifests,
        concurrency,
        connections,
    } = *shape;
    let pick = |f: &dyn Fn(&ServerResult) -> Option<f64>| -> [Option<f64>; 3] {
        [res[0].and_then(f), res[1].and_then(f), res[2].and_then(f)]
    };
    let sha = reference.sha256_s_per_gib;
    let mut rows = vec![
        Row {
            id: "monolithic_push_mb_s".into(),
            measure: format!("monolithic push {blob_mib} MiB (MB/s)"),
            values: pick(&|r| r.mono.as_ref().map(|p| p.mb_s())),
            target: Target::RatioAtLeast(5.0),
        },
        Row {
            id: "monolithic_push_cpu_s_per_gib".into(),
            measure: "  server CPU (s/GiB)".into(),
            values: pick(&|r| r.mono.as_ref().map(|p| p.cpu_s_per_gib())),
            target: Target::CpuWithinSha { factor: 1.5, sha },
        },
        Row {
            id: "chunked_push_mb_s".into(),
            measure: format!("chunked push, {chunk_mib} MiB PATCH (MB/s)"),
            values: pick(&|r| r.chunked.as_ref().map(|p| p.mb_s())),
            target: Target::RatioAtLeast(3.0),
        },
        Row {
            id: "chunked_push_cpu_s_per_gib".into(),
            measure: "  server CPU (s/GiB)".into(),
            values: pick(&|r| r.chunked.as_ref().map(|p| p.cpu_s_per_gib())),
            target: Target::CpuWithinSha { factor: 1.5, sha },
        },
        Row {
            id: "pull_mb_s".into(),
            measure: format!("pull {blob_mib} MiB (MB/s)"),
            values: pick(&|r| r.pull.as_ref().map(|p| p.mb_s())),
            target: Target::Pull {
                ratio: 1.2,
                frac: 0.8,
                loopback: reference.loopback_mb_s,
            },
        },
        Row {
            id: "small_blob_push_per_s".into(),
            measure: format!("small blobs {small}x64 KiB, {concurrency} cl (blobs/s)"),
            values: pick(&|r| r.small.as_ref().map(|p| p.per_s())),
            target: Target::RatioAtLeast(4.0),
        },
        Row {
            id: "manifest_put_per_s".into(),
            measure: format!("manifest PUT x{manifests}, {concurrency} cl (ops/s)"),
            values: pick(&|r| r.manifests.as_ref().map(|p| p.per_s())),
            target: Target::RatioAtLeast(4.0),
        },
    ];
    let top = connections.iter().copied().max().unwrap_or(64);
    let runs = [("HEAD", Tool::Builtin), ("GET", Tool::Wrk)];
    for (method, tool) in runs {
        for &c in connections {
            let gated = c == top && c >= 64;
            let id = format!("manifest_{}_c{c}", method.to_lowercase());
            rows.push(Row {
                id: format!("{id}_req_per_s"),
                measure: format!("manifest {method} by tag, {c} conn (req/s)"),
                values: pick(&|r| r.load(method, tool, c).map(|w| w.requests_per_sec)),
                target: if gated { Target::RatioAtLeast(15.0) } else { Target::None },
            });
            rows.push(Row {
                id: format!("{id}_p50_ms"),
                measure: "  p50 latency (ms)".into(),
                values: pick(&|r| r.load(method, tool, c).map(|w| w.p50_ms)),
                target: Target::None,
            });
            rows.push(Row {
                id: format!("{id}_p99_ms"),
                measure: "  p99 latency (ms)".into(),
                values: pick(&|r| r.load(method, tool, c).map(|w| w.p99_ms)),
                target: if gated { Target::Below(5.0, "ms") } else { Target::None },
            });
        }
    }
    // The same GET load from the built-in generator, to compare the two tools.
    for &c in connections {
        rows.push(Row {
            id: format!("manifest_get_c{c}_builtin_req_per_s"),
            measure: format!("  GET {c} conn, built-in generator (req/s)"),
            values: pick(&|r| r.load("GET", Tool::Builtin, c).map(|w| w.requests_per_sec)),
            target: Target::None,
        });
    }
    rows.push(Row {
        id: "peak_rss_mib".into(),
        measure: "peak RSS, whole run (MiB)".into(),
        values: pick(&|r| r.peak_rss_kib.map(|k| k as f64 / 1024.0)),
        target: Target::Below(32.0, "MiB"),
    });
    rows
}

/// A plain-text table: the first row is the header, then a separator; the columns in
/// `left` are left-aligned (text), the others right-aligned (numbers).
fn render(cells: &[Vec<String>], left: &[usize]) -> String {
    let columns = cells.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|i| cells.iter().map(|c| c[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (n, row) in cells.iter().enumerate() {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str(" | ");
            }
            let pad = " ".repeat(widths[i] - cell.chars().count());
            if left.contains(&i) {
                line.push_str(cell);
                line.push_str(&pad);
            } else {
                line.push_str(&pad);
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if n == 0 {
            let sep: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&sep.join("-|-"));
            out.push('\n');
        }
    }
    out
}

pub fn table(rows: &[Row]) -> String {
    let header = [
        "measure",
        "distribution",
        "specreg fsync",
        "specreg no-fsync",
        "ratio fsync",
        "ratio no-fsync",
        "target",
        "fsync",
        "no-fsync",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows.iter().filter(|r| r.values.iter().any(Option::is_some)) {
        cells.push(vec![
            r.measure.clone(),
            num(r.values[0]),
            num(r.values[1]),
            num(r.values[2]),
            ratio_text(r.ratio(1)),
            ratio_text(r.ratio(2)),
            r.target.describe(),
            verdict_text(r.target.verdict(r.values[0], r.values[1])).into(),
            verdict_text(r.target.verdict(r.values[0], r.values[2])).into(),
        ]);
    }
    render(&cells, &[0, 6])
}

pub fn rows_json(rows: &[Row]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "measure": r.measure.trim(),
                    "distribution": r.values[0],
                    "specreg_fsync": r.values[1],
                    "specreg_no_fsync": r.values[2],
                    "ratio_fsync": r.ratio(1),
                    "ratio_no_fsync": r.ratio(2),
                    "target": r.target.describe(),
                    "pass_fsync": r.target.verdict(r.values[0], r.values[1]),
                    "pass_no_fsync": r.target.verdict(r.values[0], r.values[2]),
                })
            })
            .collect(),
    )
}

/// The `node` phase's rows: specreg only, absolute figures, issue #5's targets.
pub struct NodeRow {
    pub id: &'static str,
    pub measure: String,
    pub value: f64,
    pub target: NodeTarget,
}

pub enum NodeTarget {
    None,
    /// Strictly below, in the row's unit.
    Below(f64, &'static str),
    /// A proxy/direct ratio at most this.
    RatioAtMost(f64),
}

impl NodeTarget {
    fn describe(&self) -> String {
        match self {
            NodeTarget::None => "-".into(),
            NodeTarget::Below(v, unit) => format!("< {v} {unit}"),
            NodeTarget::RatioAtMost(r) => format!("<= {r:.2}x"),
        }
    }
    fn verdict(&self, v: f64) -> Option<bool> {
        match self {
            NodeTarget::None => None,
            NodeTarget::Below(max, _) => Some(v < *max),
            NodeTarget::RatioAtMost(r) => Some(v <= *r),
        }
    }
}

pub fn node_rows(n: &crate::node::NodeResult) -> Vec<NodeRow> {
    use crate::node::{max, median};
    let mib = n.blob_bytes >> 20;
    let files = n.files_written.map(|f| format!(", {f} files")).unwrap_or_default();
    let mut rows = vec![
        NodeRow {
            id: "use_wall_ms_median",
            measure: format!("specreg use, fresh --root{files}, median of {} (ms)", n.runs),
            value: median(&n.use_wall_ms),
            target: NodeTarget::Below(100.0, "ms"),
        },
        NodeRow {
            id: "use_wall_ms_max",
            measure: "  max (ms)".into(),
            value: max(&n.use_wall_ms),
            target: NodeTarget::Below(100.0, "ms"),
        },
        NodeRow {
            id: "use_printed_ms_median",
            measure: "  as printed by use, median (ms)".into(),
            value: median(&n.use_printed_ms),
            target: NodeTarget::Below(100.0, "ms"),
        },
        NodeRow {
            id: "undo_wall_ms_median",
            measure: format!("specreg use --undo, median of {} (ms)", n.runs),
            value: median(&n.undo_wall_ms),
            target: NodeTarget::None,
        },
        NodeRow {
            id: "undo_wall_ms_max",
            measure: "  max (ms)".into(),
            value: max(&n.undo_wall_ms),
            target: NodeTarget::None,
        },
        NodeRow {
            id: "blob_direct_mb_s",
            measure: format!("pull {mib} MiB straight from buildset registry, best of {} (MB/s)", n.pulls),
            value: n.direct_mb_s(),
            target: NodeTarget::None,
        },
        NodeRow {
            id: "blob_proxy_mb_s",
            measure: format!("pull {mib} MiB through the node proxy, best of {} (MB/s)", n.pulls),
            value: n.proxy_mb_s(),
            target: NodeTarget::None,
        },
        NodeRow {
            id: "blob_proxy_over_direct",
            measure: "  proxy / direct time (x)".into(),
            value: n.blob_ratio(),
            target: NodeTarget::RatioAtMost(1.10),
        },
        NodeRow {
            id: "proxy_cpu_s_per_gib",
            measure: "  proxy CPU during its pulls (s/GiB)".into(),
            value: n.proxy_cpu_s_per_gib.unwrap_or(f64::NAN),
            target: NodeTarget::None,
        },
        NodeRow {
            id: "image_direct_mb_s",
            measure: format!(
                "pull a {}-layer {mib} MiB image straight from the buildset registry, 3 conns, best of {} (MB/s)",
                n.image_layers, n.pulls
            ),
            value: n.direct_image_mb_s(),
            target: NodeTarget::None,
        },
        NodeRow {
            id: "image_proxy_mb_s",
            measure: format!(
                "pull it through the node proxy ({} blob GETs redirected), best of {} (MB/s)",
                n.proxy_image_redirects, n.pulls
            ),
            value: n.proxy_image_mb_s(),
            target: NodeTarget::None,
        },
        NodeRow {
            id: "image_proxy_over_direct",
            measure: "  proxy / direct time (x)".into(),
            value: n.image_ratio(),
            target: NodeTarget::RatioAtMost(1.10),
        },
    ];
    if let Some(i) = &n.intercept {
        rows.push(NodeRow {
            id: "image_intercept_direct_mb_s",
            measure: format!("the same image straight from the buildset registry, beside the next row, best of {} (MB/s)", n.pulls),
            value: n.image_bytes as f64 / i.direct_image_s / 1e6,
            target: NodeTarget::None,
        });
        rows.push(NodeRow {
            id: "image_intercept_mb_s",
            measure: format!(
                "pull it as quay.io/library/specimen through TLS interception ({} blob GETs redirected), best of {} (MB/s)",
                i.redirects, n.pulls
            ),
            value: n.image_bytes as f64 / i.intercept_image_s / 1e6,
            target: NodeTarget::None,
        });
        rows.push(NodeRow {
            id: "image_intercept_over_direct",
            measure: "  interception / direct time (x)".into(),
            value: i.ratio(),
            target: NodeTarget::RatioAtMost(1.10),
        });
    }
    rows.extend([
        NodeRow {
            id: "manifest_direct_mean_ms",
            measure: format!("manifest GET by tag x{}, 1 conn, direct, mean (ms)", n.manifest_gets),
            value: n.direct_manifest_mean_ms,
            target: NodeTarget::None,
        },
        NodeRow {
            id: "manifest_proxy_mean_ms",
            measure: format!("manifest GET by tag x{}, 1 conn, proxy, mean (ms)", n.manifest_gets),
            value: n.proxy_manifest_mean_ms,
            target: NodeTarget::None,
        },
        NodeRow {
            id: "manifest_proxy_over_direct",
            measure: "  proxy / direct time (x; one extra hop, part of every pull above)".into(),
            value: n.manifest_ratio(),
            target: NodeTarget::None,
        },
    ]);
    rows
}

pub fn node_table(rows: &[NodeRow]) -> String {
    let header = ["measure", "specreg", "target", "verdict"];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows.iter().filter(|r| !r.value.is_nan()) {
        cells.push(vec![
            r.measure.clone(),
            num(Some(r.value)),
            r.target.describe(),
            verdict_text(r.target.verdict(r.value)).into(),
        ]);
    }
    render(&cells, &[0, 2])
}

pub fn node_rows_json(rows: &[NodeRow]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "measure": r.measure.trim(),
                    "specreg": r.value,
                    "target": r.target.describe(),
                    "pass": r.target.verdict(r.value),
                })
            })
            .collect(),
    )
}
