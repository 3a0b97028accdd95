//! Distributed mode, observed: the worker's health, readiness and metrics endpoints, the
//! coordinator's rows-eligible gauge, and one trace per work item from the coordinator process
//! into the worker process (an in-process OTLP collector receives them).

mod common;

use std::time::{Duration, Instant};

use archiver_coordinator::distributed;
use common::distributed_env::*;
use common::*;
use tokio_util::sync::CancellationToken;

/// A plain HTTP/1.0 GET, enough for our own endpoints.
async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_serves_health_readiness_and_metrics() {
    let env = Env::new().await;
    seeded(&env.db, 1_000).await;
    let defaults = "range_interval: 4000d";
    let builder = env.builder().defaults(defaults).table(audit_table());
    let config = load(&builder);
    let (_dir, path) = config_file(&builder);
    let port = archiver_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let bin = worker_bin();
    let mut child = tokio::process::Command::new(&bin)
        .args(["--config", &path, "--metrics-addr", &addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Some(r) = http_get(&addr, "/healthz").await {
            break r;
        }
        assert!(Instant::now() < deadline, "the worker never served /healthz");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(health.0, 200);
    let (status, body) = http_get(&addr, "/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    for check in [format!("database {}: ok", env.db.name), "object store: ok".into(), "broker: ok".into()] {
        assert!(body.contains(&check), "/readyz lacks {check:?}: {body}");
    }
    // Before any work: every counter at 0 for its known labels, each with its help text, and the
    // backlog as this long-running process sees it.
    let (_, idle) = http_get(&addr, "/metrics").await.unwrap();
    let at_zero = |name: &str, labels: &[&str]| {
        idle.lines().any(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)) && l.ends_with(" 0"))
    };
    let db_label = format!("database=\"{}\"", env.db.name);
    assert!(at_zero("archiver_records_archived_total{", &[&db_label, "table=\"audit_log\""]), "{idle}");
    assert!(at_zero("archiver_errors_total{", &["stage=\"storage\"", "kind=\"permanent\""]), "{idle}");
    assert!(at_zero("archiver_errors_total{", &["stage=\"database\"", "kind=\"transient\""]), "{idle}");
    assert!(at_zero("archiver_items_in_flight", &[]), "{idle}");
    let eligible = snapshot(&env.db, "audit_log").await.values().filter(|r| is_eligible(r)).count();
    let backlog = format!("archiver_rows_eligible{{database=\"{}\",table=\"audit_log\"}} {eligible}", env.db.name);
    assert!(idle.contains(&backlog), "/metrics lacks {backlog:?}:\n{idle}");
    for name in ["archiver_records_archived_total", "archiver_errors_total", "archiver_batches_total", "archiver_rows_eligible"] {
        assert!(idle.contains(&format!("# HELP {name} ")), "/metrics has no help for {name}:\n{idle}");
    }
    let summary = waited(distributed::run(&config, dist_opts(true, 200), CancellationToken::new()).await.unwrap());
    assert!(summary.all_finished(), "{summary}");
    let (_, metrics) = http_get(&addr, "/metrics").await.unwrap();
    let line = format!("archiver_records_archived_total{{database=\"{}\",table=\"audit_log\"}} {}", env.db.name, summary.rows());
    assert!(metrics.contains(&line), "/metrics lacks {line:?}:\n{metrics}");
    for name in ["archiver_batch_duration_seconds_bucket{stage=\"delete\"", "archiver_bytes_uploaded_total", "archiver_batches_total", "archiver_items_in_flight", "archiver_last_success_timestamp_seconds", "archiver_db_connections_active"] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    // Manifests are not batches: the upload stage counts batch objects only.
    let value = |prefix: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix}:\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let batches = value("archiver_batches_total{");
    assert!(batches > 0.0);
    assert_eq!(value("archiver_batch_duration_seconds_count{stage=\"upload\"}"), batches, "{metrics}");
    child.kill().await.unwrap();
}

/// A row older than the tests' 90-day retention.
fn is_eligible(row: &serde_json::Value) -> bool {
    let ts = chrono::DateTime::parse_from_rfc3339(row["created_at"].as_str().unwrap()).unwrap();
    ts < chrono::Utc::now() - chrono::Duration::days(90)
}

/// `archiver_rows_eligible` is what is left to archive: counted when the run plans, and again
/// when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_reports_rows_eligible() {
    let metrics = archiver_engine::observe::install_recorder();
    let env = Env::new().await;
    seeded(&env.db, 1_000).await;
    let config = load(&env.builder().defaults("range_interval: 4000d").table(audit_table()));
    let (eligible,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_log WHERE created_at < now() - interval '90 days'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert!(eligible > 0);
    let gauge = |n: i64| format!("archiver_rows_eligible{{database=\"{}\",table=\"audit_log\"}} {n}\n", env.db.name);
    distributed::run(&config, dist_opts(false, 200), CancellationToken::new()).await.unwrap();
    assert!(metrics.render().contains(&gauge(eligible)), "{}", metrics.render());
    let summary = run_with_workers(&config, 1).await;
    assert_eq!(summary.rows(), eligible);
    assert!(metrics.render().contains(&gauge(0)), "{}", metrics.render());
}

/// An in-process OTLP collector: gRPC and HTTP/protobuf trace receivers keeping what they get,
/// as (service.name, span).
mod otlp {
    use std::sync::{Arc, Mutex};

    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
    use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    pub use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;

    #[derive(Clone, Default)]
    pub struct Collector(Arc<Mutex<Vec<(String, Span)>>>);

    pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
    }

    pub fn attr_str(attrs: &[KeyValue], key: &str) -> Option<String> {
        match attr(attrs, key)? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            Value::BoolValue(b) => Some(b.to_string()),
            other => Some(format!("{other:?}")),
        }
    }

    impl Collector {
        fn add(&self, req: ExportTraceServiceRequest) {
            let mut spans = self.0.lock().unwrap();
            for rs in req.resource_spans {
                let service = rs.resource.as_ref().and_then(|r| attr_str(&r.attributes, "service.name")).unwrap_or_default();
                for ss in rs.scope_spans {
                    spans.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
                }
            }
        }

        pub fn spans(&self) -> Vec<(String, Span)> {
            self.0.lock().unwrap().clone()
        }

        /// Serves OTLP/gRPC; returns the endpoint.
        pub async fn serve_grpc(&self) -> String {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let incoming = futures::stream::unfold(listener, |l| async move {
                let next = l.accept().await.map(|(s, _)| s);
                Some((next, l))
            });
            let svc = TraceServiceServer::new(self.clone());
            tokio::spawn(tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming));
            format!("http://{addr}")
        }

        /// Serves OTLP/HTTP with protobuf bodies; returns the endpoint.
        pub async fn serve_http(&self) -> String {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let me = self.clone();
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(move |body: axum::body::Bytes| async move {
                    me.add(ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body"));
                    ExportTraceServiceResponse { partial_success: None }.encode_to_vec()
                }),
            );
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://{addr}")
        }
    }

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            self.add(request.into_inner());
            Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
        }
    }
}

/// One trace per work item from the coordinator process into the worker process: the worker's
/// `archive_item` span names the coordinator's `publish_item` span as its parent, and below it
/// every batch has a span per stage. The coordinator exports over gRPC, the worker over
/// HTTP/protobuf, and the worker's spans arrive only because SIGTERM flushes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_item_from_coordinator_to_worker_process() {
    use otlp::Collector;
    let env = Env::new().await;
    seeded(&env.db, 3_000).await;
    let defaults = "range_interval: 60d\nbatch_size: 400";
    let (_dir, path) = config_file(&env.builder().defaults(defaults).table(audit_table()));
    let collector = Collector::default();
    let (grpc, http) = (collector.serve_grpc().await, collector.serve_http().await);
    let quiet = || std::process::Stdio::null();
    let mut worker = tokio::process::Command::new(worker_bin())
        .args(["--config", &path])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &http)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .stdout(quiet())
        .stderr(quiet())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let coordinator = tokio::process::Command::new(env!("CARGO_BIN_EXE_archiver-coordinator"))
        .args(["--config", &path, "run", "--wait"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &grpc)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_SERVICE_NAME", "coordinator-under-test")
        .stdout(quiet())
        .stderr(quiet())
        .status();
    let status = tokio::time::timeout(Duration::from_secs(120), coordinator).await.expect("the run finished").unwrap();
    assert!(status.success(), "run --wait: {status:?}");
    libc_kill(worker.id().unwrap() as i32);
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await.expect("the worker exited").unwrap();
    assert!(status.success(), "worker after SIGTERM: {status:?}");

    let items: Vec<(String,)> =
        sqlx::query_as("SELECT state FROM archiver.work_items").fetch_all(&env.db.pool).await.unwrap();
    assert!(items.len() >= 2 && items.iter().all(|(s,)| s == "done"), "{items:?}");
    let (archived,): (i64,) = sqlx::query_as("SELECT coalesce(sum(row_count), 0)::bigint FROM archiver.batches")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert!(archived > 0);
    assert_one_trace_per_item(&collector.spans(), items.len(), archived, &env.db.name);
}

/// `spans` hold one trace per item: the coordinator's `publish_item` span is the parent of the
/// worker's `archive_item` span, below it a span per batch accounting for all `archived` rows,
/// and below each batch a span per stage.
fn assert_one_trace_per_item(spans: &[(String, otlp::Span)], items: usize, archived: i64, database: &str) {
    use otlp::attr_str;
    let named = |service: &str, name: &str| -> Vec<otlp::Span> {
        spans.iter().filter(|(s, sp)| s == service && sp.name == name).map(|(_, sp)| sp.clone()).collect()
    };
    let publishes = named("coordinator-under-test", "publish_item");
    let archives = named("archiver-worker", "archive_item");
    assert_eq!(publishes.len(), items, "one publish span per item");
    assert_eq!(archives.len(), items, "one archive_item span per item");
    let traces: std::collections::HashSet<_> = publishes.iter().map(|p| p.trace_id.clone()).collect();
    assert_eq!(traces.len(), items, "each item has a trace of its own");
    for a in &archives {
        let parent = publishes
            .iter()
            .find(|p| p.span_id == a.parent_span_id)
            .unwrap_or_else(|| panic!("archive_item {:?} has no coordinator parent", attr_str(&a.attributes, "item")));
        assert_eq!(a.trace_id, parent.trace_id, "the worker continues the coordinator's trace");
        assert_eq!(attr_str(&a.attributes, "item"), attr_str(&parent.attributes, "item"));
    }
    // Batches below the items, stages below the batches, all in the item's trace.
    let batches = named("archiver-worker", "batch");
    assert!(!batches.is_empty());
    let mut rows = 0;
    for b in &batches {
        let item = archives.iter().find(|a| a.span_id == b.parent_span_id).expect("a batch belongs to an item");
        assert_eq!(b.trace_id, item.trace_id);
        assert_eq!(attr_str(&b.attributes, "table"), Some(format!("{database}/public.audit_log")));
        assert!(attr_str(&b.attributes, "bytes").is_some_and(|v| v.parse::<i64>().unwrap() > 0), "{:?}", b.attributes);
        rows += attr_str(&b.attributes, "rows").expect("rows attribute").parse::<i64>().unwrap();
        let mut stages: Vec<String> =
            spans.iter().filter(|(_, s)| s.parent_span_id == b.span_id).map(|(_, s)| s.name.clone()).collect();
        stages.sort();
        assert_eq!(stages, ["checkpoint", "delete", "encode", "extract", "upload", "verify"], "stages of a batch");
    }
    assert_eq!(rows, archived, "the batch spans account for every archived row");
}
