//! The `keel` command line.
//!
//! # Layout
//! - this file: arguments (clap), dispatch, output and exit codes.
//! - [`commands`] — one function per command.
//! - [`server`] — `keel migrate`, `keel token`, `keel user` (the records database).
//! - [`toolkit`] — `keel redis`, `keel cache`, `keel ratelimit`.
//! - [`workflow`] — `keel workflow` (definitions and instances).
//! - [`bench`] — `keel bench`, Keel vs raw bullmq-official (and the Node peer via a script);
//!   [`bench_server`] its server scenarios (HTTP enqueue, run records), [`bench_toolkit`] its
//!   toolkit scenarios, [`bench_cluster`] its `--cluster` run. `scripts/bench-http.sh` compares the HTTP path with the Node peer.
//!
//! Exit codes: 0 success, 1 unexpected failure, 2 bad input or configuration (the message names
//! the argument or key), 3 backend unreachable.

mod bench;
mod bench_cluster;
mod bench_handlers;
mod bench_server;
mod bench_toolkit;
mod commands;
mod server;
mod toolkit;
mod workflow;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use serde_json::json;

/// Keel: background jobs with dead-letter queues, on Redis (BullMQ-compatible) or in memory.
#[derive(Parser, Debug)]
#[command(
    name = "keel",
    version,
    after_help = "Exit codes: 0 ok, 1 unexpected failure, 2 bad input or configuration, 3 backend unreachable, 4 rate limit rejected (keel ratelimit check)."
)]
pub struct Cli {
    /// Configuration file (default: keel.toml in the working directory, when present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Redis URL (overrides the file and REDIS_URL).
    #[arg(long, global = true, value_name = "URL")]
    pub redis: Option<String>,
    /// Key prefix (overrides the file and REDIS_KEY_PREFIX).
    #[arg(long, global = true, value_name = "P")]
    pub prefix: Option<String>,
    /// Print JSON for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the owner HTTP API and the configured queues' workers until SIGTERM/SIGINT.
    Serve {
        /// How long in-flight jobs may take to finish at shutdown.
        #[arg(long, default_value_t = 30_000, value_name = "MS")]
        shutdown_timeout_ms: u64,
    },
    /// Apply (up) or revert (down) the records database migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Manage the console's named accounts (people sign in with email and password).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Workflows: definitions, runs, instances.
    Workflow {
        #[command(subcommand)]
        action: WorkflowAction,
    },
    /// Run the configured queues' workers until SIGTERM/SIGINT.
    Worker {
        /// Only these queues (comma-separated).
        #[arg(long, value_delimiter = ',')]
        queues: Vec<String>,
        /// How long in-flight jobs may take to finish at shutdown.
        #[arg(long, default_value_t = 30_000, value_name = "MS")]
        shutdown_timeout_ms: u64,
    },
    /// Add a job; prints its id.
    Enqueue {
        /// The queue.
        queue: String,
        /// The job name.
        name: String,
        /// The payload, as JSON.
        #[arg(long, default_value = "{}")]
        data: String,
        /// Milliseconds before the job may run.
        #[arg(long, allow_hyphen_values = true, value_name = "MS")]
        delay: Option<String>,
        /// Priority (1 = first).
        #[arg(long, allow_hyphen_values = true)]
        priority: Option<String>,
        /// A caller-chosen id (adding it again returns the existing job).
        #[arg(long)]
        job_id: Option<String>,
        /// Total attempts.
        #[arg(long, allow_hyphen_values = true)]
        attempts: Option<String>,
        /// fixed:MS or exponential:MS.
        #[arg(long)]
        backoff: Option<String>,
        /// Add to the front of the queue.
        #[arg(long)]
        lifo: bool,
    },
    /// Counts per queue.
    Queues,
    /// List jobs of a queue.
    Jobs {
        /// The queue.
        queue: String,
        /// waiting, active, delayed, prioritized, completed or failed.
        #[arg(long, default_value = "waiting")]
        state: String,
        /// Jobs per page (1-1000).
        #[arg(long, default_value = "20", allow_hyphen_values = true)]
        limit: String,
        /// Page, from 1.
        #[arg(long, default_value = "1", allow_hyphen_values = true)]
        page: String,
    },
    /// One job in full.
    Job {
        /// The queue.
        queue: String,
        /// The job id.
        id: String,
    },
    /// A queue's dead-letter queue.
    Dlq {
        /// The queue whose DLQ to work on.
        queue: String,
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Pause a queue everywhere.
    Pause {
        /// The queue.
        queue: String,
    },
    /// Resume a queue.
    Resume {
        /// The queue.
        queue: String,
    },
    /// Measure throughput and latency (JSON lines).
    Bench(bench::BenchArgs),
    /// Redis health and monitoring.
    Redis {
        #[command(subcommand)]
        action: RedisAction,
    },
    /// Read and invalidate the toolkit cache.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Check a rate-limit policy.
    Ratelimit {
        #[command(subcommand)]
        action: RateLimitAction,
    },
}

/// `keel migrate` actions.
#[derive(Subcommand, Debug)]
pub enum MigrateAction {
    /// Apply pending migrations.
    Up,
    /// Revert the latest migrations.
    Down {
        /// How many.
        #[arg(long, default_value = "1", allow_hyphen_values = true)]
        steps: String,
    },
}

/// `keel token` actions.
#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Create a token; prints its secret once.
    Create {
        /// owner, admin or viewer.
        #[arg(long)]
        role: String,
        /// Bind it to a tenant (by name; created if missing).
        #[arg(long)]
        tenant: Option<String>,
        /// A label.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token.
    Revoke {
        /// The token id.
        id: String,
    },
}

/// `keel user` actions.
#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// Create an account; the password is prompted for, or read from stdin when it is not a
    /// terminal (at least 12 characters; stored as an argon2id hash).
    Create {
        /// The email the person signs in with.
        #[arg(long)]
        email: String,
        /// owner, admin or viewer.
        #[arg(long)]
        role: String,
        /// Bind it to a tenant (by name; created if a configured queue is bound to it).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List accounts (never their passwords).
    List,
    /// Disable an account: it can no longer sign in, and its sessions end.
    Disable {
        /// The account's email.
        email: String,
    },
}

/// `keel workflow` actions.
#[derive(Subcommand, Debug)]
pub enum WorkflowAction {
    /// The definitions (latest versions).
    List,
    /// Start an instance; prints its id.
    Run {
        /// The workflow.
        name: String,
        /// Its input, as JSON.
        #[arg(long, default_value = "{}")]
        input: String,
    },
    /// Instances, newest first.
    Instances {
        /// Only this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// pending, running, completed, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Page, from 1.
        #[arg(long, default_value = "1", allow_hyphen_values = true)]
        page: String,
        /// Per page (1-1000).
        #[arg(long, default_value = "20", allow_hyphen_values = true)]
        limit: String,
    },
    /// One instance and its steps.
    Instance {
        /// The instance id.
        id: String,
    },
    /// Cancel a pending or running instance.
    Cancel {
        /// The instance id.
        id: String,
    },
    /// Re-run a failed or cancelled instance from its failed steps.
    Rerun {
        /// The instance id.
        id: String,
    },
}

/// `keel redis` actions.
#[derive(Subcommand, Debug)]
pub enum RedisAction {
    /// PING with latency; ok / warn / critical.
    Health,
    /// Memory, hit rate, ops/sec, clients, version, uptime, persistence, with alerts.
    Info,
}

/// `keel cache` actions.
#[derive(Subcommand, Debug)]
pub enum CacheAction {
    /// Print the fresh value of a key.
    Get {
        /// The cache namespace.
        namespace: String,
        /// The key.
        key: String,
    },
    /// Delete a key.
    Del {
        /// The cache namespace.
        namespace: String,
        /// The key.
        key: String,
    },
    /// Delete every key of the namespace matching a glob (SCAN + UNLINK).
    DelPattern {
        /// The cache namespace.
        namespace: String,
        /// A glob such as user:*.
        pattern: String,
    },
}

/// `keel ratelimit` actions.
#[derive(Subcommand, Debug)]
pub enum RateLimitAction {
    /// Count one request against POLICY for KEY and print the decision (exit 4 if rejected).
    Check {
        /// The policy (built in or from [ratelimit.policies]).
        policy: String,
        /// The subject: a user id, email, IP.
        key: String,
        /// Units to count.
        #[arg(long, default_value = "1", allow_hyphen_values = true)]
        cost: String,
    },
}

/// DLQ actions.
#[derive(Subcommand, Debug)]
pub enum DlqAction {
    /// List entries.
    List {
        /// Entries per page (1-1000).
        #[arg(long, default_value = "50", allow_hyphen_values = true)]
        limit: String,
        /// Page, from 1.
        #[arg(long, default_value = "1", allow_hyphen_values = true)]
        page: String,
    },
    /// Send one entry (or all with --all) back to its queue with fresh attempts.
    Replay {
        /// The entry id.
        id: Option<String>,
        /// Replay every entry.
        #[arg(long)]
        all: bool,
        /// With --all: only say how many would be replayed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove an entry (and its failed original).
    Remove {
        /// The entry id.
        id: String,
    },
}

/// A command failure with its exit code.
#[derive(Debug)]
pub struct Failure {
    /// Stable kebab-case code.
    pub code: &'static str,
    /// Human message.
    pub message: String,
    /// The argument or key at fault.
    pub field: Option<String>,
    /// Process exit code.
    pub exit: u8,
}

impl From<keel::Error> for Failure {
    fn from(e: keel::Error) -> Failure {
        let exit = match &e {
            keel::Error::InvalidInput { .. }
            | keel::Error::NeedsSharedBackend(_)
            | keel::Error::NotFound { .. }
            | keel::Error::Conflict(_)
            | keel::Error::Locked(_) => 2,
            keel::Error::LockLost(_) => 1,
            keel::Error::BackendUnavailable(_) => 3,
            keel::Error::Backend(_) => 1,
        };
        Failure {
            code: e.code(),
            field: e.field().map(str::to_string),
            message: e.to_string(),
            exit,
        }
    }
}

impl From<keel_records::StoreError> for Failure {
    fn from(e: keel_records::StoreError) -> Failure {
        use keel_records::StoreError as E;
        let exit = match &e {
            E::NotFound(_) | E::Conflict(_) | E::Invalid { .. } => 2,
            E::Unavailable(_) => 3,
            E::Database(_) => 1,
        };
        Failure {
            code: e.code(),
            field: e.field().map(str::to_string),
            message: e.to_string(),
            exit,
        }
    }
}

impl From<keel_server::serve::ServeError> for Failure {
    fn from(e: keel_server::serve::ServeError) -> Failure {
        match e {
            keel_server::serve::ServeError::Queue(e) => e.into(),
            keel_server::serve::ServeError::Records(e) => e.into(),
            keel_server::serve::ServeError::Config(e) => e.into(),
        }
    }
}

impl From<keel::config::ConfigError> for Failure {
    fn from(e: keel::config::ConfigError) -> Failure {
        Failure {
            code: "invalid-config",
            field: e.key().map(str::to_string),
            message: format!("invalid configuration: {e}"),
            exit: 2,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,bullmq=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keel: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let json_out = cli.json;
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if json_out && f.code == "rate-limited" {
                // The decision itself was printed: it is the answer, not an error.
            } else if json_out {
                println!(
                    "{}",
                    json!({"error": {"code": f.code, "message": f.message, "field": f.field}})
                );
            } else {
                eprintln!("keel: {}", f.message);
            }
            ExitCode::from(f.exit)
        }
    }
}
