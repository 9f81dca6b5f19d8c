//! docs/deploy.md's metrics table is the one reference for every metric: what the real
//! gateway and device expose must be exactly what it lists, each metric in one row naming its
//! labels, so alerts written from the docs fire. Scraped from running processes.

use std::collections::BTreeMap;

use ferrocam_tests::process::workspace_root;
use ferrocam_tests::{Stack, StackOptions, free_port};

/// The rows of the metrics table, by the metric named in the first column (labels cut off).
fn documented(prefix: &str) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let docs = std::fs::read_to_string(workspace_root().join("docs/deploy.md"))?;
    let mut rows = BTreeMap::<String, Vec<String>>::new();
    for line in docs.lines() {
        let Some(cell) = line.strip_prefix("| `") else {
            continue;
        };
        let name = cell.split(['`', '{']).next().unwrap_or_default();
        if name.starts_with(prefix) {
            rows.entry(name.to_owned())
                .or_default()
                .push(line.to_owned());
        }
    }
    Ok(rows)
}

/// The sample name of every metric in an exposition (`# TYPE` gives the family; counters add
/// `_total`, infos `_info`).
fn exposed(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(family, kind)| match kind {
            "counter" => format!("{family}_total"),
            "info" => format!("{family}_info"),
            _ => family.to_owned(),
        })
        .collect();
    names.sort();
    names
}

/// Every exposed metric is documented in exactly one row, that row names each label the
/// metric has (as "`label`:"), and nothing is documented that is not exposed.
fn assert_documented(text: &str, prefix: &str) -> anyhow::Result<()> {
    let documented = documented(prefix)?;
    assert_eq!(
        exposed(text),
        documented.keys().cloned().collect::<Vec<_>>(),
        "docs/deploy.md and /metrics disagree:\n{text}"
    );
    for (name, rows) in &documented {
        assert_eq!(rows.len(), 1, "{name} is documented {} times", rows.len());
    }
    for sample in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, labels)) = sample.split_once('{') else {
            continue;
        };
        let row = documented
            .iter()
            .find(|(name, _)| series.starts_with(name.as_str()))
            .map(|(_, rows)| &rows[0])
            .unwrap_or_else(|| panic!("{series} is not documented"));
        let labels = labels.split('}').next().unwrap_or_default();
        for label in labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, _)| k)
        {
            assert!(
                label == "le" || row.contains(&format!("`{label}`:")),
                "the row of {series} does not name its label {label}: {row}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_metrics_table_lists_exactly_what_gateway_and_device_expose() -> anyhow::Result<()> {
    let device_metrics = format!("127.0.0.1:{}", free_port());
    let stack = Stack::start(
        StackOptions::new("metrics_docs").device_args(&["--metrics-listen", &device_metrics]),
    )
    .await?;
    let gateway = ureq::get(&stack.url("metrics"))
        .call()?
        .body_mut()
        .read_to_string()?;
    assert_documented(&gateway, "ferrocam_gateway_")?;
    let device = ureq::get(&format!("http://{device_metrics}/metrics"))
        .call()?
        .body_mut()
        .read_to_string()?;
    assert_documented(&device, "ferrocam_device_")?;
    // Counters exist before their first increment, so an alert on a rate sees a series.
    for series in [
        r#"ferrocam_gateway_offers_total{via="ws",result="no_common_codec"} 0"#,
        r#"ferrocam_gateway_offers_total{via="whep",result="accepted"} 0"#,
        "ferrocam_device_keyframes_forced_total 0",
    ] {
        let text = if series.starts_with("ferrocam_gateway") {
            &gateway
        } else {
            &device
        };
        assert!(
            text.lines().any(|l| l == series),
            "no {series:?} in\n{text}"
        );
    }
    Ok(())
}
