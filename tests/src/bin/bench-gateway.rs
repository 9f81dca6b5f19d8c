//! Benchmark: one gateway with many devices.
//!
//! Starts a gateway (embedded rumqttd, or Mosquitto) from `FERROCAM_BIN_DIR` (the Makefile
//! points it at `target/release`), connects N simulated devices (lightweight MQTT clients that
//! answer offers with a canned SDP), then runs M WHEP sessions through it. Prints a Markdown
//! table row and, with `--json`, writes the full report. See `ferrocam_tests::gateway_bench`.
//!
//! ```text
//! bench-gateway [--devices N] [--broker embedded|mosquitto] [--sessions M] [--concurrency C]
//!               [--connect-rate R] [--json PATH] [--no-header]
//! ```
//!
//! Run all four configurations with `make bench-gateway`.

use ferrocam_tests::gateway_bench::{self, BenchBroker, BenchOptions, BenchReport};

const USAGE: &str = "usage: bench-gateway [--devices N] [--broker embedded|mosquitto] \
[--sessions M] [--concurrency C] [--connect-rate R] [--json PATH] [--no-header]";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut devices = 1000;
    let mut broker = BenchBroker::Embedded;
    let mut sessions = None;
    let mut concurrency = None;
    let mut connect_rate = None;
    let mut json = None;
    let mut header = true;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--devices" => devices = value()?.parse()?,
            "--broker" => broker = value()?.parse()?,
            "--sessions" => sessions = Some(value()?.parse()?),
            "--concurrency" => concurrency = Some(value()?.parse()?),
            "--connect-rate" => connect_rate = Some(value()?.parse()?),
            "--json" => json = Some(value()?),
            "--no-header" => header = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let limit = gateway_bench::raise_nofile_limit()?;
    eprintln!("open-file limit: {limit}");

    let mut options = BenchOptions::new(devices, broker);
    options.sessions = sessions.unwrap_or(options.sessions);
    options.concurrency = concurrency.unwrap_or(options.concurrency);
    options.connect_rate = connect_rate.unwrap_or(options.connect_rate);
    let report = gateway_bench::run(&options).await?;

    if let Some(path) = json {
        if let Some(dir) = std::path::Path::new(&path).parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    if header {
        println!("{}", BenchReport::markdown_header());
    }
    println!("{}", report.markdown_row());
    Ok(())
}
