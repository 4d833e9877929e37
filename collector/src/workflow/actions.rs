//! What each of a person's [`Command`]s asks for, for forms: the console draws an
//! incident's buttons from [`available`], which keeps only the actions the incident's
//! state allows (asking the engine itself, on a copy), so the page never offers a
//! transition the workflow would refuse.
use serde::Serialize;

use super::engine::{apply, Command, Input, WorkflowError};
use super::incident::{Incident, Person, ServiceKind};
use super::policy::Policy;
use super::time::Millis;
use super::ClassifyChange;

/// A field's kind, for the form that asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "choices")]
pub enum FieldKind {
    /// Free text.
    Text,
    /// A level, 1 to 3.
    Level,
    /// A priority, P1 to P4.
    Priority,
    /// Yes or no.
    Bool,
    /// A person's login.
    Person,
    /// A support group.
    Group,
    /// A list of names.
    List,
    /// An instant (ms since the epoch).
    Time,
    /// A whole number.
    Number,
    /// One of the listed names.
    Choice(&'static [&'static str]),
}

/// One field of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FieldSpec {
    /// Its name in the action's JSON body.
    pub name: &'static str,
    /// What it holds.
    #[serde(flatten)]
    pub kind: FieldKind,
    /// Whether the action needs it.
    pub required: bool,
}

/// One action and its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ActionSpec {
    /// The action's name (the [`Command`] tag; the URL's last segment).
    pub action: &'static str,
    /// Its fields.
    pub fields: &'static [FieldSpec],
}

const fn f(name: &'static str, kind: FieldKind, required: bool) -> FieldSpec {
    FieldSpec {
        name,
        kind,
        required,
    }
}

use FieldKind::{
    Bool, Choice, Group, Level as Lvl, List, Number, Person as Who, Priority as Pri, Text, Time,
};

const LEVELS_OF_IMPACT: &[&str] = &["low", "medium", "high"];

/// Every action a person can take, in the order forms list them.
pub const ACTIONS: &[ActionSpec] = &[
    ActionSpec {
        action: "validate",
        fields: &[],
    },
    ActionSpec {
        action: "request_info",
        fields: &[f("question", Text, true)],
    },
    ActionSpec {
        action: "info_received",
        fields: &[f("text", Text, true)],
    },
    ActionSpec {
        action: "confirm",
        fields: &[f("note", Text, false)],
    },
    ActionSpec {
        action: "not_reproduced",
        fields: &[f("note", Text, false)],
    },
    ActionSpec {
        action: "classify",
        fields: &[
            f("category", Text, false),
            f("impact", Choice(LEVELS_OF_IMPACT), false),
            f("urgency", Choice(LEVELS_OF_IMPACT), false),
            f("priority", Pri, false),
            f("resources", List, false),
        ],
    },
    ActionSpec {
        action: "assign",
        fields: &[f("assignee", Who, false), f("group", Group, false)],
    },
    ActionSpec {
        action: "escalate",
        fields: &[f("to", Lvl, false), f("why", Text, false)],
    },
    ActionSpec {
        action: "request_provider",
        fields: &[
            f("provider", Text, false),
            f("kind", Choice(&["unplanned", "scheduled"]), true),
            f("agreed_at", Time, true),
            f("priority", Pri, false),
            f("affects_network", Bool, false),
            f("conditions", Text, false),
        ],
    },
    ActionSpec {
        action: "provider_accept",
        fields: &[f("note", Text, false)],
    },
    ActionSpec {
        action: "provider_propose",
        fields: &[f("date", Time, true), f("note", Text, false)],
    },
    ActionSpec {
        action: "provider_reschedule",
        fields: &[f("agreed_at", Time, true), f("note", Text, false)],
    },
    ActionSpec {
        action: "provider_done",
        fields: &[f("report", Text, true)],
    },
    ActionSpec {
        action: "provider_delivered",
        fields: &[f("as_agreed", Bool, true), f("note", Text, false)],
    },
    ActionSpec {
        action: "resolve",
        fields: &[f("solution", Text, true)],
    },
    ActionSpec {
        action: "close",
        fields: &[f("note", Text, false)],
    },
    ActionSpec {
        action: "reopen",
        fields: &[f("why", Text, true)],
    },
    ActionSpec {
        action: "note",
        fields: &[f("text", Text, true)],
    },
    ActionSpec {
        action: "reserve",
        fields: &[
            f("level", Choice(&["public", "reserved", "classified"]), true),
            f("years", Number, false),
            f("fields", List, false),
            f("from", Time, false),
            f("justification", Text, true),
        ],
    },
];

/// The spec of the action named `name`.
pub fn spec(name: &str) -> Option<&'static ActionSpec> {
    ACTIONS.iter().find(|a| a.action == name)
}

/// A command of the action `name` with stand-in values: what [`available`] asks the
/// engine about. `None` for an unknown name.
pub fn sample(name: &str, now: Millis) -> Option<Command> {
    let text = || "-".to_string();
    Some(match name {
        "validate" => Command::Validate,
        "request_info" => Command::RequestInfo { question: text() },
        "info_received" => Command::InfoReceived { text: text() },
        "confirm" => Command::Confirm { note: text() },
        "not_reproduced" => Command::NotReproduced { note: text() },
        "classify" => Command::Classify(ClassifyChange::default()),
        "assign" => Command::Assign {
            assignee: None,
            group: None,
        },
        "escalate" => Command::Escalate {
            to: None,
            why: text(),
        },
        "request_provider" => Command::RequestProvider(super::ProviderRequestSpec {
            provider: Some(text()),
            kind: ServiceKind::Unplanned,
            priority: None,
            agreed_at: now,
            affects_network: false,
            conditions: String::new(),
            respond_within: None,
            resolve_within: None,
            request: None,
        }),
        "provider_accept" => Command::ProviderAccept { note: text() },
        "provider_propose" => Command::ProviderPropose {
            date: now,
            note: text(),
        },
        "provider_reschedule" => Command::ProviderReschedule {
            agreed_at: now,
            note: text(),
        },
        "provider_done" => Command::ProviderDone { report: text() },
        "provider_delivered" => Command::ProviderDelivered {
            as_agreed: true,
            note: text(),
        },
        "resolve" => Command::Resolve { solution: text() },
        "close" => Command::Close { note: text() },
        "reopen" => Command::Reopen { why: text() },
        "note" => Command::Note { text: text() },
        "reserve" => Command::Reserve(super::ReserveSpec {
            level: super::Secrecy::Reserved,
            years: Some(1),
            from: None,
            fields: None,
            justification: text(),
        }),
        _ => return None,
    })
}

/// Whether the workflow takes `name` in the incident's present state (the answer for
/// stand-in values: a refusal that depends on what is typed still lets the form show).
pub fn state_allows(inc: &Incident, by: &Person, name: &str, now: Millis, policy: &Policy) -> bool {
    let Some(command) = sample(name, now) else {
        return false;
    };
    match apply(
        inc,
        &Input::Person {
            by: by.clone(),
            command,
        },
        now,
        policy,
    ) {
        Ok(_) => true,
        Err(
            WorkflowError::Illegal { .. }
            | WorkflowError::NotHigher { .. }
            | WorkflowError::ReopenWindowPassed { .. }
            | WorkflowError::NotServiceDesk { .. },
        ) => false,
        Err(_) => true,
    }
}

/// The actions `by` may take on `inc` now among those `permitted` lets through.
pub fn available(
    inc: &Incident,
    by: &Person,
    now: Millis,
    policy: &Policy,
    permitted: impl Fn(&Command) -> bool,
) -> Vec<&'static ActionSpec> {
    ACTIONS
        .iter()
        .filter(|a| {
            sample(a.action, now).is_some_and(|c| permitted(&c))
                && state_allows(inc, by, a.action, now, policy)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_one_spec_under_its_own_name() {
        for a in ACTIONS {
            let c = sample(a.action, 0).unwrap_or_else(|| panic!("no sample for {}", a.action));
            assert_eq!(c.name(), a.action);
            // The spec's fields are the command's fields: the sample encodes exactly them
            // (its optional ones may be absent).
            let v = serde_json::to_value(&c).unwrap();
            let keys: Vec<&str> = v
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .filter(|k| *k != "command")
                .collect();
            for k in &keys {
                assert!(
                    a.fields.iter().any(|f| f.name == *k) || a.action == "classify",
                    "{}: field {k} has no spec",
                    a.action
                );
            }
            for field in a.fields.iter().filter(|f| f.required) {
                assert!(
                    keys.contains(&field.name),
                    "{}: {} required",
                    a.action,
                    field.name
                );
            }
        }
        assert_eq!(ACTIONS.len(), 19, "a new Command needs its spec here");
        assert!(sample("frobnicate", 0).is_none());
    }
}
