//! One file per page (or page family) of the console.

pub mod bulk;
pub mod dlq;
pub mod job;
pub mod jobs;
pub mod login;
pub mod logs;
pub mod messages;
pub mod overview;
pub mod queues;
pub mod redis;
pub mod runs;
pub mod workflows;
