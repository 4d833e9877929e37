//! The support workflow of the seed procedures, as a pure engine: no I/O, no clock reads.
//!
//! Every transition is `(incident, input, now, policy) -> Result<Decision, WorkflowError>`:
//! the store loads an incident, calls [`route`] for a device event (which runs
//! [`correlate`], then [`open`] or [`apply`] and returns a [`Plan`]), [`apply`] for a
//! person's command, or [`tick`] (timers: verification window, SLA breaches and
//! escalation, network notice, auto-close), writes the new incident with its audit records
//! in one transaction, and only then sends the [`Outgoing`] messages. [`next_deadline`] says when to call [`tick`] next, so the
//! collector sleeps on one timer instead of polling. The trade-off of keeping the engine
//! pure is that the caller supplies everything it needs (device tags, warranty, the latest
//! incident for a fault key) and persists everything it returns; in exchange every rule
//! here is tested to the millisecond without a clock, a broker or a disk.
//!
//! States and transitions (`docs/design.md`, "The workflow"):
//! ```text
//! registered ─► validating ─┬─► needs_info ──(info arrives)──► validating
//!                           └─► verifying ─┬─► closed (not reproduced / transient)
//!                                          └─► diagnosed ─► level 1 | 2 | 3
//! level 1 ─► level 2 ─► level 3        any level ─► waiting_provider ─► back to its level
//! any level ─► resolved ─┬─► closed (service desk, or auto-close after the quiet period)
//!                        └─► reopened ─► level 1
//! ```
//! A fault that returns to a resolved incident, or within the reopen window after it
//! closed, reopens it too.

pub mod actions;
mod correlate;
mod engine;
mod export;
mod incident;
mod policy;
mod provider;
mod reserve;
mod route;
mod sla;
mod summary;
mod tick;
mod time;
mod triage;

pub use correlate::{correlate, Correlation};
pub use engine::{
    apply, open, open_fault, open_service, register, Audience, ClassifyChange, Command, Decision,
    DeviceEvent, FaultInput, Input, Notification, NotificationKind, Outgoing, WorkflowError,
};
pub use export::{
    csv_cell, row, rows, to_csv, to_json, verification_rows, verifications_csv, ExportRow, Period,
    VerificationRow, CSV_HEADER, VERIFICATION_HEADER,
};
pub use incident::{
    Actor, AuditRecord, Classification, Closure, ClosureReason, Deadline, Delivery, DeviceContext,
    FaultKey, FaultSeq, FieldChange, Impact, Incident, IncidentNo, InfoRequest, Level, Note,
    Occurrence, Occurrences, Origin, Overdue, Person, Priority, Proposal, ProviderRequest,
    ProviderRequestSpec, Rejection, Role, ServiceKind, ServiceOrder, SlaClock, SpecialisedPath,
    Stamp, State, UnknownName, Warranty,
};
pub use policy::{
    parse_rules, FlappingConfig, Policy, PolicyConfig, PolicyError, ReportField, SlaConfig,
    SlaTargets, ValidationConfig,
};
pub use provider::{suggested_provider, warranty_provider, ProviderError};
pub use reserve::{
    add_years, hide, hide_summary, hide_text, Reserve, ReserveError, ReserveSpec, ReservedField,
    Secrecy, MAX_YEARS, RESERVED,
};
pub use route::{device_commands, related, repeat_commands, route, Plan, Related};
pub use sla::{next_deadline, sla_status, SlaStatus, Target};
pub use summary::{IncidentSummary, SlaBrief};
pub use tick::tick;
pub use time::{rfc3339, Dur, DurError, Millis, DAY, HOUR, MINUTE, SECOND, WEEK};
pub use triage::{
    print_rules, urgency_of, Match, Matrix, Outcome, Rule, RulesConfig, RulesError, TriageRules,
};
