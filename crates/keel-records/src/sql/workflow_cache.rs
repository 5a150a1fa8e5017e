//! What a process remembers of the workflow instances it wrote: each live instance's state at
//! the revision it committed. A batch write locks its instance rows reading only their
//! revisions (`keel_wf_instances.rev`, raised by every transaction that changes an instance or
//! one of its steps) and reads the full state — the instance row and its step rows — only of
//! instances whose revision is not the one remembered: new to this process, or moved on by
//! another process, by an API call on another connection, or by a transaction whose answer
//! came later than the next one's. A remembered state is only ever the committed state at its
//! revision, so a stale entry costs a read, never a wrong answer.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::workflow::WorkflowState;

/// Most instances remembered; a full cache starts again empty (ended instances leave at once,
/// so only a backlog of that many live instances fills it).
const MOST: usize = 50_000;

/// Instance id → (revision, state at that revision).
#[derive(Default)]
pub(super) struct StateCache {
    states: Mutex<HashMap<String, (i64, WorkflowState)>>,
}

impl StateCache {
    /// The state of `id` at revision `rev`, if remembered, taken out (the transaction that
    /// takes it puts back the state it commits; one that fails leaves it to be read again).
    pub(super) fn take(&self, id: &str, rev: i64) -> Option<WorkflowState> {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        // Taken out whether or not it matches: an entry at another revision is stale (the row
        // moved on, or was rewritten under it), and must never be handed out later.
        match states.remove(id) {
            Some((r, st)) if r == rev => Some(st),
            _ => None,
        }
    }

    /// Remembers `st` as committed at `rev` (unless a later revision is remembered); an ended
    /// instance is forgotten.
    pub(super) fn put(&self, rev: i64, st: &WorkflowState) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if st.instance.status.is_final() {
            states.remove(&st.instance.id);
            return;
        }
        if let Some((r, _)) = states.get(&st.instance.id) {
            if *r >= rev {
                return;
            }
        } else if states.len() >= MOST {
            states.clear();
        }
        states.insert(st.instance.id.clone(), (rev, st.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::StateCache;
    use crate::workflow::test_state;

    #[test]
    fn a_state_is_handed_out_only_at_its_revision_and_only_once() {
        let c = StateCache::default();
        let st = test_state(&[]);
        let x = st.instance.id.clone();
        c.put(3, &st);
        assert_eq!(c.take(&x, 3).map(|s| s.instance.id), Some(x.clone()));
        assert!(c.take(&x, 3).is_none(), "taken out");
        c.put(3, &st);
        c.put(2, &st);
        // An older revision does not replace a newer one.
        assert!(c.take(&x, 3).is_some());
        // A mismatch — the row moved on, or was rewritten lower — forgets the entry, so it
        // cannot be handed out when the row's revision comes to equal it.
        c.put(3, &st);
        assert!(c.take(&x, 4).is_none());
        assert!(c.take(&x, 3).is_none());
    }
}
