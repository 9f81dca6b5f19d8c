//! The gateway benchmark's harness works: a small run (50 simulated devices, 50 WHEP sessions)
//! on each broker brings every device online and gets every session created. No timing is
//! judged; `make bench-gateway` measures.

use ferrocam_tests::gateway_bench::{self, BenchBroker, BenchOptions};

async fn smoke(broker: BenchBroker) -> anyhow::Result<()> {
    let mut options = BenchOptions::new(50, broker);
    options.sessions = 50;
    options.concurrency = 4;
    options.name = format!("bench_smoke_{broker}");
    let report = gateway_bench::run(&options).await?;
    eprintln!("{}", report.markdown_row());
    assert_eq!(report.devices_online, 50, "{report:#?}");
    assert_eq!(report.created, 50, "{report:#?}");
    assert!(report.failures.is_empty(), "{report:#?}");
    assert_eq!(report.delete_failures, 0, "{report:#?}");
    assert_eq!(report.relay_ms.count, 50, "{report:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_bench_runs_on_the_embedded_broker() -> anyhow::Result<()> {
    smoke(BenchBroker::Embedded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_bench_runs_on_mosquitto() -> anyhow::Result<()> {
    smoke(BenchBroker::Mosquitto).await
}
