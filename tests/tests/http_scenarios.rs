//! The seeds' scenarios over real HTTP, on an in-process server (`homeroom_api::serve`
//! on 127.0.0.1:0) over each embedded backend. The same scenarios run against the real
//! binary in `crates/homeroom/tests/http_binary.rs`.

use homeroom_api::{Claims, TokenKeys};
use homeroom_domain::DistrictId;
use homeroom_eventstore::memory::InMemoryStore;
use homeroom_eventstore::EventStore;
use homeroom_store_sqlite::SqliteStore;
use homeroom_tests::http::{wait_ready, Api, Tokens, SCENARIOS};
use homeroom_tests::InProcess;
use std::sync::Arc;
use std::time::Duration;

const SECRET: [u8; 32] = [9; 32];

struct Keys(TokenKeys);

impl Tokens for Keys {
    fn token(&self, district: &str, subject: &str, system: bool) -> String {
        let district = DistrictId::parse(district).unwrap();
        self.0
            .issue(&Claims::new(
                &district,
                subject,
                system,
                Duration::from_secs(600),
            ))
            .unwrap()
    }
}

/// Serves a fresh store from `open` on a runtime of its own, runs every scenario
/// against it, then shuts it down.
fn run_scenarios<F>(open: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = (Arc<dyn EventStore>, Option<tempfile::TempDir>)>,
{
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (store, _dir) = open().await;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let instance = InProcess::start(store, TokenKeys::from_secret(&SECRET)).await;
            homeroom_api::serve(listener, instance.state, async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
        });
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let api = Api::new(
        &addr.to_string(),
        Box::new(Keys(TokenKeys::from_secret(&SECRET))),
    );
    wait_ready(&api);
    for (name, scenario) in SCENARIOS {
        eprintln!("scenario {name}");
        scenario(&api);
    }
    stop_tx.send(()).unwrap();
    server.join().unwrap();
}

#[test]
fn every_scenario_over_http_in_memory() {
    run_scenarios(|| async {
        let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
        (store, None)
    });
}

#[test]
fn every_scenario_over_http_on_sqlite() {
    run_scenarios(|| async {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("events.sqlite"))
            .await
            .unwrap();
        let store: Arc<dyn EventStore> = Arc::new(store);
        (store, Some(dir))
    });
}
