//! The worker's leases: a heartbeat renews every lease of the worker in one call
//! (`extend.lua`), and the stall recovery returns expired leases to waiting, or fails poison
//! pills (`recover.lua`).

use std::sync::Arc;

use keel_core::backend::WorkerEvent;
use keel_core::Result;
use serde_json::json;
use tokio::sync::watch;

use crate::worker::Shared;

/// Most expired leases one `recover` call returns.
const RECOVER_LIMIT: usize = 1000;

/// Renews every lease of the worker at half the lease duration, in one call.
pub(crate) async fn heartbeat(s: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let every = s.opts.lock_duration / 2;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
        let leases: Vec<(String, String)> = s
            .leased
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(id, lease)| (id.clone(), lease.clone()))
            .collect();
        if leases.is_empty() {
            if *stop.borrow() {
                return;
            }
            continue;
        }
        let mut inv = s.keys.invoke(&s.engine.scripts.extend);
        inv.arg(s.opts.lock_duration.as_millis() as u64);
        for (id, lease) in &leases {
            inv.arg(id).arg(lease);
        }
        let mut conn = s.engine.conn.clone();
        match s
            .engine
            .bounded(
                "renewing leases",
                inv.invoke_async::<Vec<String>>(&mut conn),
            )
            .await
        {
            Ok(lost) if !lost.is_empty() => {
                tracing::warn!(queue = %s.queue, jobs = lost.len(), "leases lost: those jobs were recovered as stalled and run again (their results here will not count)");
                let mut leased = s.leased.lock().expect("not poisoned");
                for id in lost {
                    let sent = leases.iter().find(|(i, _)| *i == id).map(|(_, l)| l);
                    if leased.get(&id) == sent {
                        leased.remove(&id);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => (s.sink)(WorkerEvent::Error {
                message: format!("renewing leases: {e}"),
            }),
        }
    }
}

/// Returns expired leases to waiting (or fails poison pills) every stalled interval.
pub(crate) async fn recovery(s: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = recover(&s).await {
            (s.sink)(WorkerEvent::Error {
                message: format!("recovering stalled jobs: {e}"),
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(s.opts.stalled_interval) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn recover(s: &Shared) -> Result<()> {
    let mut inv = s.keys.invoke(&s.engine.scripts.recover);
    inv.arg(s.opts.max_stalled_count)
        .arg(RECOVER_LIMIT)
        .arg(
            json!({"reason": format!(
                "job stalled more than allowable limit ({} times: every worker that took it died or lost its lease)",
                s.opts.max_stalled_count
            )})
            .to_string(),
        );
    let mut conn = s.engine.conn.clone();
    let ids: Vec<String> = s
        .engine
        .bounded("recovering stalled jobs", inv.invoke_async(&mut conn))
        .await?;
    let mut failed = false;
    for id in ids {
        if id.is_empty() {
            failed = true;
            continue;
        }
        if failed {
            (s.sink)(WorkerEvent::Failed {
                job_id: id,
                reason: "job stalled more than allowable limit".into(),
                terminal: true,
            });
        } else {
            (s.sink)(WorkerEvent::Stalled { job_id: id });
        }
    }
    Ok(())
}
