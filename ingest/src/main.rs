//! The `hookgate` command: `serve`, `check`, `sign`, `providers`, `spool`, `dispatch`,
//! `dlq`, `quarantine`, `telegram set-webhook`.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use hookgate_ingest::config::Config;
use hookgate_ingest::runtime;
use hookgate_ingest::server::{self, App};
use hookgate_ingest::verify::{
    self, catalog, GenericHmacOptions, HmacAlgorithm, Provider, SigEncoding,
};
use hookgate_sinks::log::kafka::KafkaLog;
use hookgate_sinks::log::quarantine::Quarantine;
use hookgate_sinks::log::spool::Spool;

// The request path allocates small, short-lived buffers on every request from several
// threads (tokio workers, librdkafka); mimalloc's thread-local free lists measured faster
// than glibc's malloc here (bench/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// hookgate: verified, deduplicated, durable webhook ingest into Kafka and chat sinks.
#[derive(Parser)]
#[command(name = "hookgate", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the webhook server (embedded default config when --config is not given).
    Serve {
        /// Config file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a config file and report every problem with its location.
    Check {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the headers a provider would send for a body (a test aid).
    Sign {
        /// Provider name or alias (`hookgate providers` lists them).
        #[arg(long)]
        provider: String,
        /// The secret (for discord: the Ed25519 private seed, 64 hex digits).
        #[arg(long, env = "HOOKGATE_SIGN_SECRET", hide_env_values = true)]
        secret: String,
        /// File with the body; `-` or absent reads standard input.
        #[arg(long)]
        body: Option<PathBuf>,
        /// Unix time to sign at (default now).
        #[arg(long)]
        timestamp: Option<i64>,
        /// generic-hmac: signature header name.
        #[arg(long, default_value = "x-signature")]
        header: String,
        /// generic-hmac: sha1, sha256 or sha512.
        #[arg(long, default_value = "sha256")]
        algorithm: String,
        /// generic-hmac: hex or base64.
        #[arg(long, default_value = "hex")]
        encoding: String,
        /// generic-hmac: text before the signature.
        #[arg(long, default_value = "")]
        prefix: String,
        /// URL-signing schemes: the URL the provider calls (the source's `public_url`).
        #[arg(long)]
        public_url: Option<String>,
        /// Print a curl command line instead of bare headers, for this URL.
        #[arg(long)]
        curl: Option<String>,
    },
    /// List the providers hookgate verifies: name, aliases, signature header(s), what is
    /// signed, handshakes.
    Providers {
        /// As a JSON array.
        #[arg(long, conflicts_with_all = ["markdown", "update_readme"])]
        json: bool,
        /// As the README's Markdown table.
        #[arg(long, conflicts_with = "update_readme")]
        markdown: bool,
        /// Rewrite the provider table between the markers of this README file.
        #[arg(long, value_name = "README")]
        update_readme: Option<PathBuf>,
    },
    /// Inspect the local spool.
    Spool {
        #[command(subcommand)]
        cmd: SpoolCmd,
    },
    /// Run only the dispatcher (Kafka consumer group), without the HTTP server. Several
    /// dispatcher processes in one group share the work.
    Dispatch {
        /// Config file (needs [kafka], [[sinks]] and [[routes]]).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Inspect and replay dead letters.
    Dlq {
        #[command(subcommand)]
        cmd: DlqCmd,
    },
    /// Inspect and replay events Kafka refused for good (kept beside the spool).
    Quarantine {
        #[command(subcommand)]
        cmd: QuarantineCmd,
    },
    /// Telegram bot setup.
    Telegram {
        #[command(subcommand)]
        cmd: TelegramCmd,
    },
}

#[derive(Subcommand)]
enum TelegramCmd {
    /// Print the curl command that registers hookgate as the bot's webhook (setWebhook,
    /// with the source's secret as secret_token). The command holds the bot token and the
    /// secret: that is its purpose; run it, do not paste it anywhere.
    SetWebhook {
        /// Config file with a telegram source and a telegram sink (the bot).
        #[arg(long, short)]
        config: PathBuf,
        /// The public URL Telegram should post to; a bare https://host gets
        /// /hooks/<source> appended.
        #[arg(long)]
        url: String,
        /// The telegram source, when the config has several.
        #[arg(long)]
        source: Option<String>,
        /// The telegram sink whose bot token is used, when the config has several.
        #[arg(long)]
        sink: Option<String>,
    },
}

#[derive(Subcommand)]
enum QuarantineCmd {
    /// Print quarantined events as JSON lines (hookgate-id, source, delivery id, topic,
    /// reason, error, time).
    List {
        /// Config file (needs [kafka] and [spool]).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Send quarantined events to Kafka again (each keeps its hookgate-id) and remove the
    /// ones delivered; exit 1 when any is still refused or undelivered.
    Replay {
        /// Config file (needs [kafka] and [spool]).
        #[arg(long, short)]
        config: PathBuf,
        /// Only the event with this hookgate-id.
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Subcommand)]
enum DlqCmd {
    /// Print pending dead letters as JSON lines.
    List {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only entries for this sink.
        #[arg(long)]
        sink: Option<String>,
    },
    /// Deliver pending dead letters again; stops at the first failure (exit 1).
    Replay {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only entries for this sink.
        #[arg(long)]
        sink: Option<String>,
    },
}

#[derive(Subcommand)]
enum SpoolCmd {
    /// Print spooled events as JSON lines.
    Read {
        /// Config file (its [spool] path; default the embedded default's).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Start at this offset.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// At most this many events.
        #[arg(long, default_value_t = u64::MAX)]
        limit: u64,
    },
    /// Print the spool's size and positions as JSON, with each consumer's cursor and lag.
    Stats {
        /// Config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.cmd {
        Cmd::Serve { config } => serve(config.as_deref()).await,
        Cmd::Check { config } => Ok(check(&config)),
        Cmd::Sign {
            provider,
            secret,
            body,
            timestamp,
            header,
            algorithm,
            encoding,
            prefix,
            public_url,
            curl,
        } => {
            let provider = Provider::lookup(&provider).map_err(anyhow::Error::msg)?;
            let body = read_body(body.as_deref())?;
            let now = timestamp.unwrap_or_else(|| hookgate_proto::now_ms() / 1000);
            let generic = GenericHmacOptions {
                header: header.parse().context("--header is not a header name")?,
                algorithm: HmacAlgorithm::parse(&algorithm).context("--algorithm")?,
                encoding: SigEncoding::parse(&encoding).context("--encoding")?,
                prefix,
            };
            let options = verify::Options {
                generic: Some(generic),
                public_url,
                ..verify::Options::default()
            };
            let signed = verify::sign_request(provider, &secret, &body, now, &options)
                .map_err(|e| anyhow::anyhow!("cannot sign: {e}"))?;
            let headers = signed.headers;
            let mut out = std::io::stdout().lock();
            let config_secret = provider
                .spec()
                .config_secret(&secret)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if config_secret != secret {
                // A public key (asymmetric schemes), never the secret itself.
                eprintln!("# configure this as the {provider} source's secret: {config_secret}");
            }
            match curl {
                Some(url) => {
                    write!(out, "curl -sS -X POST '{url}'")?;
                    for (k, v) in &headers {
                        write!(out, " -H '{k}: {v}'")?;
                    }
                    writeln!(out, " -H 'content-type: application/json' --data-binary @-")?;
                }
                None => {
                    for (k, v) in &headers {
                        writeln!(out, "{k}: {v}")?;
                    }
                }
            }
            if provider.spec().signature_in_body() {
                // The signature is inside the body: print the body to send.
                eprintln!("# {provider} signs inside the body; send this body:");
                out.write_all(&signed.body)?;
                writeln!(out)?;
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Cmd::Providers {
            json,
            markdown,
            update_readme,
        } => providers(json, markdown, update_readme.as_deref()),
        Cmd::Spool { cmd } => spool_cmd(cmd),
        Cmd::Dispatch { config } => dispatch(&config).await,
        Cmd::Dlq { cmd } => dlq_cmd(cmd).await,
        Cmd::Quarantine { cmd } => quarantine_cmd(cmd).await,
        Cmd::Telegram {
            cmd:
                TelegramCmd::SetWebhook {
                    config,
                    url,
                    source,
                    sink,
                },
        } => {
            let cfg = load(Some(&config))?;
            let call = hookgate_ingest::telegram_setup::set_webhook(
                &cfg,
                &url,
                source.as_deref(),
                sink.as_deref(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            for n in &call.notes {
                eprintln!("# note: {n}");
            }
            eprintln!("# this command holds the bot token and the webhook secret: run it, do not share it");
            writeln!(std::io::stdout().lock(), "{}", call.curl())?;
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

async fn quarantine_cmd(cmd: QuarantineCmd) -> anyhow::Result<std::process::ExitCode> {
    let (config, id, replay) = match cmd {
        QuarantineCmd::List { config } => (config, None, false),
        QuarantineCmd::Replay { config, id } => (config, id, true),
    };
    let cfg = load(Some(&config))?;
    let kc = cfg
        .kafka
        .as_ref()
        .context("the quarantine holds records Kafka refused: this config has no [kafka]")?;
    let sc = runtime::spool_config(&cfg)
        .context("the quarantine lives beside the spool: this config has no [spool]")?;
    let dir = Quarantine::dir_beside(&sc.path);
    let q = Quarantine::open(&dir)
        .with_context(|| format!("open the quarantine at {}", dir.display()))?;
    let listing = q.list()?;
    let bad = listing.unreadable;
    let mut out = std::io::stdout().lock();
    for (path, why) in &bad {
        eprintln!("unreadable quarantine entry {}: {why}", path.display());
    }
    let entries: Vec<_> = listing
        .entries
        .into_iter()
        .filter(|e| id.as_deref().is_none_or(|id| e.meta.id == id))
        .collect();
    if !replay {
        for e in &entries {
            writeln!(out, "{}", serde_json::to_string(&e.meta)?)?;
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if let Some(id) = &id {
        if entries.is_empty() {
            bail!("no quarantined event has the id {id}");
        }
    }
    let kafka = KafkaLog::new(kc, cfg.max_record_bytes()).context("build kafka producer")?;
    let (mut replayed, mut failed) = (0usize, 0usize);
    for e in &entries {
        match kafka.append(&e.event).await {
            Ok(_) => {
                q.remove(&e.meta.id)?;
                replayed += 1;
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"id": e.meta.id, "replayed": true})
                )?;
            }
            Err(err) => {
                failed += 1;
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"id": e.meta.id, "replayed": false, "error": err.to_string()})
                )?;
            }
        }
    }
    kafka.flush(std::time::Duration::from_secs(5)).await;
    writeln!(
        out,
        "{}",
        serde_json::json!({"replayed": replayed, "failed": failed, "remaining": q.recount()?})
    )?;
    Ok(if failed > 0 || !bad.is_empty() {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}

async fn dispatch(config: &Path) -> anyhow::Result<std::process::ExitCode> {
    init_tracing();
    let cfg = load(Some(config))?;
    let k = cfg
        .kafka
        .clone()
        .context("`hookgate dispatch` reads Kafka; with the spool as the log the dispatcher runs inside `hookgate serve`")?;
    if cfg.routes.is_empty() {
        bail!("the config has no [[routes]]: nothing to dispatch");
    }
    let prometheus = runtime::install_metrics()?;
    let dispatcher = runtime::build_dispatcher(&cfg, Arc::new(runtime::dlq_store(&cfg)?))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let topics = runtime::routed_topics(&cfg);
    let group = cfg.dispatch.group_id.clone();
    let feed_stop = stop_rx.clone();
    let mut task = tokio::spawn(async move {
        hookgate_sinks::dispatch::run_kafka_feed(&k, &group, topics, dispatcher, feed_stop).await
    });
    // Probes and the Prometheus scrape: ready while the consumer loop runs.
    let admin = match &cfg.admin {
        Some(a) => {
            let (l, _) = bind_admin(a).await?;
            let feed_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let done = feed_done.clone();
            let ready: hookgate_ingest::probe::Readiness = Arc::new(move || {
                if done.load(std::sync::atomic::Ordering::Acquire) {
                    Err("dispatcher_stopped")
                } else {
                    Ok(())
                }
            });
            let server = tokio::spawn(hookgate_ingest::probe::serve(
                l,
                prometheus,
                ready,
                stop_rx.clone(),
            ));
            Some((server, feed_done))
        }
        None => None,
    };
    println!("dispatching");
    let _ = std::io::stdout().flush();
    // A consumer loop that ends on its own (a Kafka client error) ends the process with an
    // error, so a supervisor restarts it instead of keeping an idle dispatcher alive.
    let ended = tokio::select! {
        _ = runtime::shutdown_signal() => None,
        r = &mut task => Some(r),
    };
    if let Some((_, done)) = &admin {
        done.store(true, std::sync::atomic::Ordering::Release);
    }
    let _ = stop_tx.send(true);
    if let Some((server, _)) = admin {
        let _ = server.await;
    }
    let early = ended.is_some();
    let result = match ended {
        Some(r) => r,
        None => task.await,
    };
    match result {
        Ok(Ok(())) if early => bail!("the dispatcher stopped on its own"),
        Ok(Ok(())) => Ok(std::process::ExitCode::SUCCESS),
        Ok(Err(e)) => Err(anyhow::anyhow!("dispatcher: {e}")),
        Err(_) => bail!("the dispatcher task failed"),
    }
}

/// Binds `[admin] listen`, logs it and prints `admin listening on ADDR` (tests and scripts
/// read the port from it when listening on :0).
async fn bind_admin(
    a: &hookgate_ingest::config::AdminConfig,
) -> anyhow::Result<(tokio::net::TcpListener, std::net::SocketAddr)> {
    let l = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("admin: listen on {}", a.listen))?;
    let addr = l.local_addr()?;
    tracing::info!(%addr, "admin listener: /metrics, /healthz, /readyz");
    println!("admin listening on {addr}");
    let _ = std::io::stdout().flush();
    Ok((l, addr))
}

async fn dlq_cmd(cmd: DlqCmd) -> anyhow::Result<std::process::ExitCode> {
    let (config, sink, replay) = match cmd {
        DlqCmd::List { config, sink } => (config, sink, false),
        DlqCmd::Replay { config, sink } => (config, sink, true),
    };
    let cfg = load(Some(&config))?;
    let mut out = std::io::stdout().lock();
    if !replay {
        let store = runtime::dlq_store_to_list(&cfg)?;
        for e in hookgate_sinks::dispatch::dlq_list(&store, sink.as_deref()).await? {
            writeln!(out, "{}", e.to_json())?;
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let store = Arc::new(runtime::dlq_store(&cfg)?);
    let dispatcher = runtime::build_dispatcher(&cfg, store.clone())?;
    let report = hookgate_sinks::dispatch::dlq_replay(&store, &dispatcher, sink.as_deref()).await?;
    writeln!(
        out,
        "{}",
        serde_json::json!({
            "replayed": report.replayed,
            "failed": report.failed,
            "remaining": report.remaining,
            "failure": report.failure.as_ref().map(|(e, err)| serde_json::json!({"entry": e.to_json(), "error": err})),
        })
    )?;
    Ok(if report.failed > 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}

fn read_body(path: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    match path {
        Some(p) if p != Path::new("-") => {
            body = std::fs::read(p).with_context(|| format!("read {}", p.display()))?
        }
        _ => {
            std::io::stdin().read_to_end(&mut body)?;
        }
    }
    Ok(body)
}

fn load(config: Option<&Path>) -> anyhow::Result<Config> {
    let (cfg, warnings) = match config {
        Some(p) => Config::load(p)?,
        None => Config::embedded()?,
    };
    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok(cfg)
}

fn check(path: &Path) -> std::process::ExitCode {
    match Config::load(path) {
        Ok((cfg, warnings)) => {
            for w in &warnings {
                println!("warning: {w}");
            }
            println!(
                "ok: {} source(s), {} sink(s), {} route(s); log: {}",
                cfg.sources.len(),
                cfg.sinks.len(),
                cfg.routes.len(),
                match (&cfg.kafka, cfg.bench.discard) {
                    (_, true) => "DISCARD (bench only)",
                    (Some(_), _) if cfg.spool.is_some() => "kafka with spool",
                    (Some(_), _) => "kafka",
                    (None, _) => "spool",
                }
            );
            println!("{}", cfg.console_line());
            std::process::ExitCode::SUCCESS
        }
        Err(errs) => {
            for p in &errs.0 {
                println!("error: {p}");
            }
            println!("{} problem(s) found", errs.0.len());
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HOOKGATE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    let json = std::env::var("HOOKGATE_LOG_FORMAT").is_ok_and(|v| v == "json");
    use std::io::IsTerminal as _;
    // Colour only for a person at a terminal; log files and collectors get plain text.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

async fn serve(config: Option<&Path>) -> anyhow::Result<std::process::ExitCode> {
    init_tracing();
    if config.is_none() {
        tracing::info!("no --config: using the embedded default (spool log, development secrets from HOOKGATE_*_SECRET or built-in defaults)");
    }
    let cfg = load(config)?;
    if let Err(m) = cfg.check_dev_secrets() {
        tracing::error!("{m}");
        eprintln!("error: {m}");
        // EX_CONFIG: a configuration error, told apart from a crash.
        return Ok(std::process::ExitCode::from(78));
    }
    let prometheus = runtime::install_metrics()?;
    let log = runtime::build_log(&cfg).await?;
    let mut app = App::new(&cfg, log.clone(), Some(prometheus))?;
    let mut store_task = None;
    if let Some(sc) = runtime::spool_config(&cfg).filter(|_| !cfg.bench.discard) {
        let store = Arc::new(
            hookgate_ingest::dedupe::DedupeStore::open(&sc.path.join("dedupe"), cfg.dedupe.ttl)
                .context("open the dedupe id store")?,
        );
        let (a, seeded) = app.with_dedupe_store(store.clone()).await;
        app = a;
        tracing::info!(seeded, "dedupe cache re-seeded from disk");
        if let Some(redis) = app.redis_dedupe() {
            let path = sc.path.join("dedupe").join("redis-write-back.jsonl");
            let queued = redis
                .open_journal(&path)
                .with_context(|| format!("open the Redis write-back file {}", path.display()))?;
            if queued > 0 {
                tracing::info!(
                    queued,
                    "redis dedupe: ids a previous run could not tell Redis are queued to be written back"
                );
            }
        }
        store_task = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let s = store.clone();
                let _ = tokio::task::spawn_blocking(move || s.maintain()).await;
            }
        }));
    }
    let app = Arc::new(app);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Before "listening on": once a script can see the port, a SIGHUP must not kill us.
    let reload = runtime::spawn_secret_reload(cfg.clone(), app.clone(), stop_rx.clone())?;
    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .with_context(|| format!("listen on {}", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, sources = cfg.sources.len(), "hookgate listening");
    // Tests and scripts read this line to learn the port when listening on :0.
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();

    let consumers = Arc::new(runtime::spool_consumers(&cfg, &log));
    let mut tasks = runtime::spawn_log_tasks(&log, consumers.clone(), stop_rx.clone());
    if let Some(c) = app.console() {
        // In the background: the listeners do not wait for the log's tail to be read.
        drop(c.spawn_refill());
        drop(c.spawn_sampler());
    }
    let dlq = if cfg.dispatch.enabled || app.console().is_some() {
        runtime::shared_dlq_store(&cfg)?
    } else {
        None
    };
    if let Some(store) = &dlq {
        tasks.extend(runtime::spawn_dispatch_with(
            &cfg,
            &log,
            consumers,
            stop_rx.clone(),
            store.clone(),
        )?);
        if let Some(c) = app.console() {
            c.attach_dispatch(hookgate_ingest::console::DispatchParts {
                store: store.clone(),
                dispatcher: runtime::build_dispatcher(&cfg, store.clone())?,
            });
        }
    }
    let admin = match &cfg.admin {
        Some(a) => {
            let (l, addr) = bind_admin(a).await?;
            if app.console().is_some() {
                tracing::info!("console at http://{addr}/console/ (admin API at /api/v1)");
            }
            Some(tokio::spawn(server::serve(
                app.clone(),
                l,
                server::Listener::Admin,
                stop_rx.clone(),
            )))
        }
        None => None,
    };
    if let Some(r) = app.redis_dedupe() {
        tasks.push(r.spawn_prober(stop_rx.clone()));
        tracing::info!(on_unavailable = ?r.on_unavailable(), "dedupe shared through redis");
    }
    if let Some(tls) = app.edge().tls() {
        tasks.push(tls.spawn_reloader(stop_rx.clone()));
        tracing::info!("TLS on the public listener (reloads on SIGHUP and on file change)");
    }
    let server = tokio::spawn(server::serve(
        app,
        listener,
        server::Listener::Public,
        stop_rx,
    ));
    runtime::shutdown_signal().await;
    let _ = stop_tx.send(true);
    if server.await.is_err() {
        bail!("the server task failed");
    }
    if let Some(a) = admin {
        let _ = a.await;
    }
    if let Some(r) = reload {
        let _ = r.await;
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    log.shutdown(Duration::from_secs(10)).await;
    if let Some(t) = store_task {
        t.abort();
    }
    tracing::info!("hookgate stopped");
    Ok(std::process::ExitCode::SUCCESS)
}

fn spool_cmd(cmd: SpoolCmd) -> anyhow::Result<std::process::ExitCode> {
    let config = match &cmd {
        SpoolCmd::Read { config, .. } | SpoolCmd::Stats { config } => config.clone(),
    };
    let cfg = load(config.as_deref())?;
    let sc = runtime::spool_config(&cfg).context("this config has no spool")?;
    let spool = Spool::open_read_only(&sc)
        .with_context(|| format!("open spool at {}", sc.path.display()))?;
    let mut out = std::io::stdout().lock();
    match cmd {
        SpoolCmd::Stats { .. } => {
            let stats = spool.stats_for(&runtime::spool_consumer_names(&cfg))?;
            writeln!(out, "{}", serde_json::to_string(&stats)?)?;
        }
        SpoolCmd::Read { from, limit, .. } => {
            let mut at = from;
            let mut left = limit;
            while left > 0 {
                let (batch, next) = spool.read(at, left.min(1024) as usize)?;
                if batch.is_empty() {
                    break;
                }
                for (off, ev) in &batch {
                    let mut v = ev.to_json();
                    v["offset"] = (*off).into();
                    writeln!(out, "{v}")?;
                }
                left -= batch.len() as u64;
                at = next;
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `hookgate providers`: the registry as lines, JSON or the README's table.
fn providers(
    json: bool,
    markdown: bool,
    update_readme: Option<&Path>,
) -> anyhow::Result<std::process::ExitCode> {
    let mut out = std::io::stdout().lock();
    if let Some(path) = update_readme {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let Some(updated) = catalog::update_readme(&text) else {
            bail!(
                "{} has no provider table markers ({} ... {})",
                path.display(),
                catalog::README_BEGIN,
                catalog::README_END
            );
        };
        if updated != text {
            std::fs::write(path, updated)
                .with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(out, "updated the provider table in {}", path.display())?;
        } else {
            writeln!(out, "the provider table in {} is current", path.display())?;
        }
    } else if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&catalog::json())?)?;
    } else if markdown {
        write!(out, "{}", catalog::markdown())?;
    } else {
        write!(out, "{}", catalog::lines())?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}
