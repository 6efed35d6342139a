//! Wiring for `hookgate serve`: the log from config, the metrics recorder, background
//! tasks (forwarder, readiness probe, spool gauges) and shutdown signals.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hookgate_sinks::log::kafka::KafkaLog;
use hookgate_sinks::log::quarantine::Quarantine;
use hookgate_sinks::log::spool::{Spool, SpoolConfig};
use hookgate_sinks::log::Spilling;
use hookgate_sinks::Log;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

use crate::config::Config;

/// Installs the Prometheus recorder (once per process) and returns its render handle.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let latency = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
        .context("metrics buckets")?
        .install_recorder()
        .context("install metrics recorder")?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// The spool config in force: `[spool]`, or the default directory when there is no Kafka.
pub fn spool_config(cfg: &Config) -> Option<SpoolConfig> {
    match (&cfg.kafka, &cfg.spool) {
        (_, Some(s)) => Some(s.clone()),
        (None, None) => Some(SpoolConfig::default()),
        (Some(_), None) => None,
    }
}

/// Builds the log the config asks for and checks Kafka topics exist (creating them when
/// `kafka.create_topics` is set).
pub async fn build_log(cfg: &Config) -> anyhow::Result<Log> {
    if cfg.bench.discard {
        tracing::warn!("!!! bench.discard = true: events are ACKNOWLEDGED WITHOUT BEING STORED. Never use this outside a benchmark. !!!");
        return Ok(Log::Discard);
    }
    let spool = match spool_config(cfg) {
        Some(sc) => Some(
            Spool::open_with_consumers(&sc, &spool_consumer_names(cfg))
                .with_context(|| format!("open spool at {}", sc.path.display()))?,
        ),
        None => None,
    };
    let Some(kc) = &cfg.kafka else {
        return Ok(Log::Spool(spool.context("spool")?));
    };
    let kafka = KafkaLog::new(kc, cfg.max_record_bytes()).context("build kafka producer")?;
    if kc.allow_unsafe_options {
        for (opt, why) in hookgate_sinks::log::kafka::unsafe_options(&kc.options) {
            tracing::warn!(option = %opt, why, "!!! kafka.allow_unsafe_options: this option weakens durability; a 2xx may not mean durable !!!");
        }
    }
    let mut topics: Vec<String> = cfg.sources.iter().map(|s| cfg.topic_of(s)).collect();
    if !cfg.routes.is_empty() {
        topics.push(cfg.dispatch.dlq_topic.clone());
    }
    match kafka.ensure_topics(&topics).await {
        Ok(()) => {}
        // With a spool, a broker that is down at start is survivable: spill until it returns.
        Err(hookgate_sinks::log::kafka::KafkaSinkError::Unavailable(e)) if spool.is_some() => {
            tracing::warn!(error = %e, "kafka unreachable at start; events spill to the spool until it returns");
        }
        Err(e) => return Err(e).context("kafka topics"),
    }
    Ok(match spool {
        Some(spool) => {
            let dir = Quarantine::dir_beside(&spool_config(cfg).context("spool")?.path);
            let quarantine = Quarantine::open(&dir)
                .with_context(|| format!("open the quarantine at {}", dir.display()))?;
            if !quarantine.is_empty() {
                tracing::warn!(
                    records = quarantine.len(),
                    "the quarantine holds events Kafka refused; see `hookgate quarantine list`"
                );
            }
            Log::KafkaSpool(Spilling {
                kafka,
                spool,
                quarantine,
            })
        }
        None => Log::Kafka(kafka),
    })
}

/// The spool consumers the config registers, whose cursors hold data back from retention:
/// the forwarder when Kafka has a spool, the dispatcher when the spool alone is the log and
/// routes read it (`[dispatch] enabled`). None for the embedded default (no Kafka, no routes): there retention
/// drops the oldest segments instead of refusing events.
pub fn spool_consumer_names(cfg: &Config) -> Vec<String> {
    let mut v = Vec::new();
    if spool_config(cfg).is_none() || cfg.bench.discard {
        return v;
    }
    if cfg.kafka.is_some() {
        v.push(hookgate_sinks::log::FORWARDER.to_owned());
    } else if !cfg.routes.is_empty() && cfg.dispatch.enabled {
        // The spool feed's cursor name (`feed::spool_feed::DISPATCH_CURSOR`).
        v.push("dispatcher".to_owned());
    }
    v
}

/// Names of the spool consumers whose cursors hold data back (those the spool was opened
/// with; see [`spool_consumer_names`]).
pub fn spool_consumers(_cfg: &Config, log: &Log) -> Vec<String> {
    log.spool()
        .and_then(|s| s.consumers())
        .map(<[String]>::to_vec)
        .unwrap_or_default()
}

/// How often segments past `[spool] retention` are looked for.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Starts the background tasks the log needs: the spool forwarder, the Kafka readiness
/// probe and the spool gauges.
pub fn spawn_log_tasks(
    log: &Log,
    consumers: Arc<Vec<String>>,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Log::KafkaSpool(sp) = log {
        tasks.push(tokio::spawn(hookgate_sinks::log::forwarder::run(
            sp.clone(),
            consumers,
            stop.clone(),
        )));
    }
    if let Some(k) = log.kafka() {
        let k = k.clone();
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                k.probe().await;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.changed() => return,
                }
            }
        }));
    }
    if let Some(s) = log.spool() {
        let s = s.clone();
        let quarantine = log.quarantine().cloned();
        let mut gauges_stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                if let Some(q) = &quarantine {
                    // `hookgate quarantine replay` (another process) removes entries.
                    let q = q.clone();
                    let _ = tokio::task::spawn_blocking(move || q.recount()).await;
                }
                let end = s.end_offset();
                metrics::gauge!("hookgate_spool_bytes").set(s.used_bytes() as f64);
                let backlog = end.saturating_sub(s.cursor_cached(hookgate_sinks::log::FORWARDER));
                metrics::gauge!("hookgate_spool_backlog_bytes").set(backlog as f64);
                for c in s.consumers().unwrap_or_default() {
                    let lag = end.saturating_sub(s.cursor_cached(c));
                    metrics::gauge!("hookgate_spool_consumer_lag_bytes", "consumer" => c.clone())
                        .set(lag as f64);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = gauges_stop.changed() => return,
                }
            }
        }));
        tasks.push(tokio::spawn(retention_task(log.clone(), stop)));
    }
    tasks
}

/// Deletes spool segments past `[spool] retention` (that every registered consumer is
/// past), at start and then every [`RETENTION_EVERY`].
async fn retention_task(log: Log, mut stop: watch::Receiver<bool>) {
    loop {
        if let Some(s) = log.spool().cloned() {
            match tokio::task::spawn_blocking(move || s.enforce_retention()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "spool retention failed"),
                Err(e) => tracing::error!(error = %e, "spool retention task failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETENTION_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Re-reads every source's `secrets_file` (and Microsoft Graph's `encryption_key_file` and
/// `jwks_file`) and swaps its verifier whole. A file that
/// cannot be read, holds no secret or holds a secret the provider refuses keeps the old
/// secrets (an error log, `hookgate_secret_reloads_total{result="error"}`). Returns how many
/// sources were reloaded and how many failed.
pub fn reload_source_secrets(cfg: &Config, app: &crate::server::App) -> (usize, usize) {
    let (mut ok, mut failed) = (0, 0);
    for s in cfg.sources.iter().filter(|s| s.reads_files()) {
        match s
            .resolve_secrets()
            .and_then(|secrets| s.build_verifier_from(&secrets))
        {
            Ok(v) => {
                if app.swap_verifier(&s.name, v) {
                    ok += 1;
                    metrics::counter!("hookgate_secret_reloads_total", "result" => "ok")
                        .increment(1);
                    tracing::info!(source = %s.name, "source secrets and key files re-read");
                }
            }
            Err(error) => {
                failed += 1;
                metrics::counter!("hookgate_secret_reloads_total", "result" => "error")
                    .increment(1);
                tracing::error!(source = %s.name, %error, "source secrets not reloaded: the previous secrets stay in force");
            }
        }
    }
    (ok, failed)
}

/// On every SIGHUP, re-reads the sources' `secrets_file`s and key files ([`reload_source_secrets`]);
/// with none, SIGHUP is logged and otherwise ignored.
/// Registers its own signal stream: other parts (TLS) may listen for SIGHUP too.
pub fn spawn_secret_reload(
    cfg: Config,
    app: Arc<crate::server::App>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    // Registered even when no source reads a file: once tokio listens for SIGHUP, the
    // signal no longer terminates the process (its default action), so an operator's
    // `kill -HUP` is always safe.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup()).context("listen for SIGHUP")?;
        Ok(Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    got = hup.recv() => if got.is_none() { return },
                }
                let (ok, failed) = reload_source_secrets(&cfg, &app);
                tracing::info!(ok, failed, "SIGHUP: secrets files re-read");
                if let Some(c) = app.console() {
                    match c.reload_token() {
                        Ok(true) => tracing::info!(
                            "SIGHUP: admin token re-read from token_file; console sessions ended"
                        ),
                        Ok(false) => {}
                        Err(error) => {
                            tracing::error!(%error, "admin token not reloaded: the previous token stays in force")
                        }
                    }
                }
            }
        })))
    }
    #[cfg(not(unix))]
    {
        let _ = (app, stop);
        Ok(None)
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}

/// The dead-letter store the config implies: the DLQ topic with Kafka, else a spool beside
/// the main one.
pub fn dlq_store(cfg: &Config) -> anyhow::Result<hookgate_sinks::dispatch::DlqStore> {
    use hookgate_sinks::dispatch::{DlqStore, KafkaDeadLetter, SpoolDeadLetter};
    if let Some(k) = &cfg.kafka {
        return Ok(DlqStore::Kafka(
            KafkaDeadLetter::new(k, &cfg.dispatch.dlq_topic).context("dead-letter producer")?,
        ));
    }
    let sc = spool_config(cfg).context("no spool for dead letters")?;
    Ok(DlqStore::Spool(
        SpoolDeadLetter::open_beside(&sc).context("open the dead-letter spool")?,
    ))
}

/// The dead-letter store for listing only: as [`dlq_store`], but a spool DLQ is opened
/// read-only, so `hookgate dlq list` works beside a running `hookgate serve`.
pub fn dlq_store_to_list(cfg: &Config) -> anyhow::Result<hookgate_sinks::dispatch::DlqStore> {
    use hookgate_sinks::dispatch::{DlqStore, SpoolDeadLetter};
    if cfg.kafka.is_some() {
        return dlq_store(cfg);
    }
    let sc = spool_config(cfg).context("no spool for dead letters")?;
    Ok(DlqStore::Spool(
        SpoolDeadLetter::open_read_only_beside(&sc).context("open the dead-letter spool")?,
    ))
}

/// The dispatcher for the config's sinks and routes.
pub fn build_dispatcher(
    cfg: &Config,
    store: Arc<hookgate_sinks::dispatch::DlqStore>,
) -> anyhow::Result<hookgate_sinks::dispatch::Dispatcher> {
    hookgate_sinks::dispatch::Dispatcher::new(cfg.sinks.clone(), cfg.routes.clone(), store)
        .map_err(|e| anyhow::anyhow!("sinks/routes: {e}"))
}

/// Topics the dispatcher reads: those of the sources that routes name.
pub fn routed_topics(cfg: &Config) -> Vec<String> {
    let mut t: Vec<String> = cfg
        .sources
        .iter()
        .filter(|s| cfg.routes.iter().any(|r| r.source == s.name))
        .map(|s| cfg.topic_of(s))
        .collect();
    t.sort();
    t.dedup();
    t
}

/// Starts the dispatcher inside `serve` when there are routes: a Kafka consumer group when
/// Kafka is the log, the spool's `dispatcher` cursor otherwise.
pub fn spawn_dispatch(
    cfg: &Config,
    log: &Log,
    consumers: Arc<Vec<String>>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if cfg.routes.is_empty() || !cfg.dispatch.enabled {
        return Ok(None);
    }
    spawn_dispatch_with(cfg, log, consumers, stop, Arc::new(dlq_store(cfg)?))
}

/// The dead-letter store `serve` shares between the dispatcher and the console (a spool
/// DLQ can be opened once per process), when the config has routes. `serve` opens it only
/// when the dispatcher runs or the console is on, as before for the dispatcher.
pub fn shared_dlq_store(
    cfg: &Config,
) -> anyhow::Result<Option<Arc<hookgate_sinks::dispatch::DlqStore>>> {
    if cfg.routes.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(dlq_store(cfg)?)))
}

/// [`spawn_dispatch`] with a given dead-letter store.
pub fn spawn_dispatch_with(
    cfg: &Config,
    log: &Log,
    consumers: Arc<Vec<String>>,
    stop: watch::Receiver<bool>,
    store: Arc<hookgate_sinks::dispatch::DlqStore>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if cfg.routes.is_empty() || !cfg.dispatch.enabled {
        return Ok(None);
    }
    let dispatcher = build_dispatcher(cfg, store)?;
    let task = match log {
        Log::Kafka(_) | Log::KafkaSpool(..) => {
            let k = cfg.kafka.clone().context("kafka config")?;
            let group = cfg.dispatch.group_id.clone();
            let topics = routed_topics(cfg);
            tokio::spawn(async move {
                if let Err(e) =
                    hookgate_sinks::dispatch::run_kafka_feed(&k, &group, topics, dispatcher, stop)
                        .await
                {
                    tracing::error!(error = %e, "dispatcher stopped");
                }
            })
        }
        Log::Spool(s) => tokio::spawn(hookgate_sinks::dispatch::run_spool_feed(
            s.clone(),
            dispatcher,
            consumers,
            stop,
        )),
        Log::Discard => {
            tracing::warn!("bench.discard: events are not stored, so routes receive nothing");
            return Ok(None);
        }
    };
    Ok(Some(task))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(extra: &str) -> Vec<String> {
        let text = format!(
            "{extra}\n[[sources]]\nname = \"github\"\nprovider = \"github\"\nsecrets = [\"s\"]\n"
        );
        let (cfg, _) = Config::parse(&text, "t.toml", &Default::default()).unwrap();
        spool_consumer_names(&cfg)
    }

    #[test]
    fn registered_spool_consumers_follow_the_config() {
        let routes = "[[sinks]]\nname = \"chat\"\ntype = \"telegram\"\nbot_token = \"t\"\nchat_id = \"1\"\napi_url = \"http://127.0.0.1:9\"\n\n[[routes]]\nsource = \"github\"\nsink = \"chat\"\ntemplate = \"x\"\n";
        let kafka = "[kafka]\nbrokers = \"127.0.0.1:9\"\n";
        // The embedded default: nothing reads the spool, retention makes room.
        assert!(names("").is_empty());
        assert_eq!(
            names(&format!("{kafka}[spool]\npath = \"s\"\n")),
            ["forwarder"]
        );
        assert!(names(kafka).is_empty());
        assert_eq!(names(routes), ["dispatcher"]);
        assert!(names(&format!("[dispatch]\nenabled = false\n{routes}")).is_empty());
    }
}
