//! The workflow policy: SLA targets per priority, the verification, reopen and quiet-period
//! windows, flapping thresholds and the fields a report must carry per category.
//!
//! [`PolicyConfig`] is the `[workflow]` config section (serde, `deny_unknown_fields`, defaults
//! in code); [`Policy::new`] validates it together with the triage rules into the runtime
//! value the engine reads. Values are typed in the file (durations, field names) so a typo
//! fails at parse time with toml's position, and only cross-field checks remain here.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::incident::{Origin, Priority};
use super::time::{Dur, DAY, HOUR, MINUTE};
use super::triage::{RulesConfig, RulesError, TriageRules};

/// SLA targets of one priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaTargets {
    /// Time to the first response by a person.
    pub response: Dur,
    /// Time to resolution. Breaching it escalates one level (or notifies at level 3).
    pub resolution: Dur,
    /// Time an incident may stay at one level before it is escalated to the next
    /// (at level 3: the platform owner is notified).
    pub escalate_after: Dur,
}

/// SLA targets per priority. Time counts only while the incident is being worked
/// (not while waiting for the user or a provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaConfig {
    /// Priority 1.
    #[serde(rename = "P1")]
    pub p1: SlaTargets,
    /// Priority 2.
    #[serde(rename = "P2")]
    pub p2: SlaTargets,
    /// Priority 3.
    #[serde(rename = "P3")]
    pub p3: SlaTargets,
    /// Priority 4.
    #[serde(rename = "P4")]
    pub p4: SlaTargets,
}

impl Default for SlaConfig {
    fn default() -> Self {
        let t = |r, s, e| SlaTargets {
            response: Dur(r),
            resolution: Dur(s),
            escalate_after: Dur(e),
        };
        Self {
            p1: t(15 * MINUTE, 4 * HOUR, HOUR),
            p2: t(30 * MINUTE, 8 * HOUR, 2 * HOUR),
            p3: t(4 * HOUR, 3 * DAY, DAY),
            p4: t(DAY, 10 * DAY, 3 * DAY),
        }
    }
}

impl SlaConfig {
    /// The targets of `p`.
    pub fn get(&self, p: Priority) -> &SlaTargets {
        match p {
            Priority::P1 => &self.p1,
            Priority::P2 => &self.p2,
            Priority::P3 => &self.p3,
            Priority::P4 => &self.p4,
        }
    }
}

/// Flapping: a fault raised and cleared too often is kept open and flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlappingConfig {
    /// Returns after clearing (raise after a clear) that make a fault flapping...
    pub cycles: u32,
    /// ...within this window.
    pub window: Dur,
}

impl Default for FlappingConfig {
    fn default() -> Self {
        Self {
            cycles: 3,
            window: Dur(HOUR),
        }
    }
}

/// A field of a user report that validation can require (000 step 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportField {
    /// The category.
    Category,
    /// The one-line summary.
    Summary,
    /// The free text.
    Text,
    /// Who reports.
    Reporter,
    /// How to reach them.
    Contact,
    /// The readings snapshot.
    Snapshot,
}

impl ReportField {
    /// The field's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Category => "category",
            Self::Summary => "summary",
            Self::Text => "text",
            Self::Reporter => "reporter",
            Self::Contact => "contact",
            Self::Snapshot => "snapshot",
        }
    }

    /// How to ask a person for it.
    pub fn question(self) -> &'static str {
        match self {
            Self::Category => "what kind of problem it is (hardware, network, software...)",
            Self::Summary => "a one-line summary of the problem",
            Self::Text => "a description: what you were doing, what happened, any message shown",
            Self::Reporter => "your name",
            Self::Contact => "how to reach you (phone, extension or e-mail)",
            Self::Snapshot => "a new report from the device so its readings are attached",
        }
    }

    /// Whether `origin` carries this field (agent faults carry everything).
    pub fn present_in(self, origin: &Origin) -> bool {
        match origin {
            // Faults carry everything; staff give a service's facts when they ask for it.
            Origin::Fault { .. } | Origin::Service { .. } => true,
            Origin::Report {
                category,
                summary,
                text,
                reporter,
                contact,
                snapshot,
                ..
            } => match self {
                Self::Category => !category.trim().is_empty(),
                Self::Summary => !summary.trim().is_empty(),
                Self::Text => !text.trim().is_empty(),
                Self::Reporter => !reporter.trim().is_empty(),
                Self::Contact => !contact.trim().is_empty(),
                Self::Snapshot => !snapshot.is_empty(),
            },
        }
    }
}

/// Fields a report must carry before it is worked (000 step 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// Required for every category not listed in `by_category`.
    pub required: Vec<ReportField>,
    /// Required per report category (lower case); replaces `required` for that category.
    pub by_category: BTreeMap<String, Vec<ReportField>>,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        use ReportField::*;
        Self {
            required: vec![Summary, Reporter, Contact],
            by_category: BTreeMap::from([
                ("network".to_owned(), vec![Summary, Reporter, Contact, Text]),
                (
                    "software".to_owned(),
                    vec![Summary, Reporter, Contact, Text],
                ),
            ]),
        }
    }
}

/// The `[workflow]` section of the collector config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// An agent fault that clears within this time after it is registered closes as
    /// transient (000 step 3); one still active after it is verified automatically.
    pub verification_window: Dur,
    /// A fault that returns within this time after its incident closed reopens it
    /// instead of opening a new incident.
    pub reopen_window: Dur,
    /// A resolved incident with no activity for this long is closed automatically.
    pub auto_close_after: Dur,
    /// A question to the user unanswered for this long is asked again (a reminder).
    pub info_reminder_after: Dur,
    /// A question unanswered for this long gives up waiting: the incident goes back to
    /// the service desk to verify with what it has.
    pub info_timeout: Dur,
    /// Flapping thresholds.
    pub flapping: FlappingConfig,
    /// SLA targets per priority.
    pub sla: SlaConfig,
    /// Required report fields.
    pub validation: ValidationConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            verification_window: Dur(5 * MINUTE),
            reopen_window: Dur(DAY),
            auto_close_after: Dur(3 * DAY),
            info_reminder_after: Dur(DAY),
            info_timeout: Dur(3 * DAY),
            flapping: FlappingConfig::default(),
            sla: SlaConfig::default(),
            validation: ValidationConfig::default(),
        }
    }
}

/// Why the policy is not usable.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not valid TOML or the wrong shape.
    #[error("{file}: {source}")]
    Parse {
        /// The file.
        file: String,
        /// What toml said.
        source: toml::de::Error,
    },
    /// A value is not acceptable.
    #[error("{file}: {field}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// The field path (`workflow.sla.P1.response`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The triage rules are not usable.
    #[error(transparent)]
    Rules(#[from] RulesError),
}

/// The validated policy the engine reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    config: PolicyConfig,
    rules: TriageRules,
}

impl Default for Policy {
    /// The defaults in code; `Policy::new(PolicyConfig::default(), ..)` accepts them (tested).
    fn default() -> Self {
        Self {
            config: PolicyConfig::default(),
            rules: TriageRules::default(),
        }
    }
}

impl Policy {
    /// Validates the `[workflow]` section (from `file`, named in errors) and the triage
    /// rules.
    pub fn new(policy: PolicyConfig, rules: TriageRules, file: &str) -> Result<Self, PolicyError> {
        let invalid = |field: &str, message: String| PolicyError::Invalid {
            file: file.to_owned(),
            field: format!("workflow.{field}"),
            message,
        };
        for p in Priority::ALL {
            let t = policy.sla.get(p);
            if t.response.ms() == 0 || t.resolution.ms() == 0 || t.escalate_after.ms() == 0 {
                return Err(invalid(
                    &format!("sla.{p}"),
                    "response, resolution and escalate_after must be longer than 0".into(),
                ));
            }
            if t.response > t.resolution {
                return Err(invalid(
                    &format!("sla.{p}.response"),
                    format!(
                        "{} is longer than the resolution target {}",
                        t.response, t.resolution
                    ),
                ));
            }
        }
        for w in Priority::ALL.windows(2) {
            let (hi, lo) = (policy.sla.get(w[0]), policy.sla.get(w[1]));
            if hi.resolution > lo.resolution {
                return Err(invalid(
                    &format!("sla.{}.resolution", w[0]),
                    format!(
                        "{} gives more time than {} ({}); a higher priority must not be slower",
                        hi.resolution, w[1], lo.resolution
                    ),
                ));
            }
        }
        if policy.flapping.cycles < 2 {
            return Err(invalid(
                "flapping.cycles",
                "must be at least 2 (one return after a clear is not flapping)".into(),
            ));
        }
        if policy.flapping.window.ms() == 0 {
            return Err(invalid("flapping.window", "must be longer than 0".into()));
        }
        if policy.auto_close_after.ms() == 0 {
            return Err(invalid(
                "auto_close_after",
                "must be longer than 0 (the service desk needs time to close)".into(),
            ));
        }
        for cat in policy.validation.by_category.keys() {
            if cat.trim().is_empty() || cat.to_lowercase() != *cat {
                return Err(invalid(
                    &format!("validation.by_category.{cat:?}"),
                    "categories are written in lower case and not empty".into(),
                ));
            }
        }
        Ok(Self {
            config: policy,
            rules,
        })
    }

    /// Parses a TOML text holding the `[workflow]` section's fields (not the section
    /// header) and the default triage rules; for tests and tools.
    pub fn from_toml(text: &str, file: &str) -> Result<Self, PolicyError> {
        let parsed: PolicyConfig = toml::from_str(text).map_err(|source| PolicyError::Parse {
            file: file.to_owned(),
            source,
        })?;
        Self::new(parsed, TriageRules::default(), file)
    }

    /// Replaces the triage rules.
    pub fn with_rules(mut self, rules: TriageRules) -> Self {
        self.rules = rules;
        self
    }

    /// The section as configured.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// The triage rules.
    pub fn rules(&self) -> &TriageRules {
        &self.rules
    }

    /// SLA targets of `p`.
    pub fn sla(&self, p: Priority) -> &SlaTargets {
        self.config.sla.get(p)
    }

    /// Verification window, ms.
    pub fn verification_window(&self) -> u64 {
        self.config.verification_window.ms()
    }

    /// Reopen window, ms.
    pub fn reopen_window(&self) -> u64 {
        self.config.reopen_window.ms()
    }

    /// Auto-close quiet period, ms.
    pub fn auto_close_after(&self) -> u64 {
        self.config.auto_close_after.ms()
    }

    /// When an unanswered question is asked again, after it was asked (ms).
    pub fn info_reminder_after(&self) -> u64 {
        self.config.info_reminder_after.ms()
    }

    /// When an unanswered question stops the wait, after it was asked (ms).
    pub fn info_timeout(&self) -> u64 {
        self.config.info_timeout.ms()
    }

    /// Flapping thresholds: (cycles, window ms).
    pub fn flapping(&self) -> (u32, u64) {
        (
            self.config.flapping.cycles,
            self.config.flapping.window.ms(),
        )
    }

    /// The fields required of a report in `category`.
    pub fn required_fields(&self, category: &str) -> &[ReportField] {
        self.config
            .validation
            .by_category
            .get(&category.trim().to_lowercase())
            .unwrap_or(&self.config.validation.required)
    }

    /// The required fields `origin` lacks (none for agent faults).
    pub fn missing_fields(&self, origin: &Origin) -> Vec<ReportField> {
        match origin {
            Origin::Fault { .. } | Origin::Service { .. } => Vec::new(),
            Origin::Report { category, .. } => self
                .required_fields(category)
                .iter()
                .copied()
                .filter(|f| !f.present_in(origin))
                .collect(),
        }
    }
}

/// Keeps the two files' parse functions next to each other for the collector's config code.
pub fn parse_rules(text: &str, file: &str) -> Result<TriageRules, RulesError> {
    RulesConfig::parse(text, file)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let p = Policy::new(PolicyConfig::default(), TriageRules::default(), "defaults").unwrap();
        assert_eq!(p, Policy::default());
        let printed = toml::to_string(&PolicyConfig::default()).unwrap();
        let back = Policy::from_toml(&printed, "printed").unwrap();
        assert_eq!(back, Policy::default());
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let p = Policy::from_toml(
            "verification_window = \"10m\"\n[sla.P1]\nresponse = \"5m\"\nresolution = \"2h\"\nescalate_after = \"30m\"\n",
            "w.toml",
        )
        .unwrap();
        assert_eq!(p.verification_window(), 10 * MINUTE);
        assert_eq!(p.sla(Priority::P1).response.ms(), 5 * MINUTE);
        assert_eq!(
            p.sla(Priority::P2),
            PolicyConfig::default().sla.get(Priority::P2)
        );
    }

    #[test]
    fn errors_name_file_and_field() {
        let cases = [
            ("bogus = 1", "bogus"),
            ("verification_window = \"5 minutes\"", "verification_window"),
            (
                "[sla.P1]\nresponse = \"5m\"\nresolution = \"1h\"",
                "escalate_after",
            ),
            (
                "[sla.P1]\nresponse = \"5h\"\nresolution = \"1h\"\nescalate_after = \"1h\"",
                "workflow.sla.P1.response",
            ),
            (
                "[sla.P1]\nresponse = \"5m\"\nresolution = \"20d\"\nescalate_after = \"1h\"",
                "workflow.sla.P1.resolution",
            ),
            ("[flapping]\ncycles = 1", "workflow.flapping.cycles"),
            ("[validation]\nrequired = [\"shoe_size\"]", "shoe_size"),
            (
                "[validation.by_category]\nNetwork = [\"text\"]",
                "workflow.validation.by_category",
            ),
        ];
        for (text, needle) in cases {
            let e = Policy::from_toml(text, "collector.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains("collector.toml"), "{text}: {e}");
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn required_fields_by_category() {
        let p = Policy::default();
        let origin = |category: &str, text: &str, contact: &str| Origin::Report {
            report_id: 1,
            category: category.into(),
            summary: "it broke".into(),
            text: text.into(),
            reporter: "ana".into(),
            contact: contact.into(),
            urgency: vigia_protocol::Urgency::Low,
            snapshot: vec![],
            open_faults: vec![],
        };
        assert_eq!(
            p.missing_fields(&origin("Network", "", "x1234")),
            vec![ReportField::Text]
        );
        assert!(p.missing_fields(&origin("printer", "", "x1234")).is_empty());
        assert_eq!(
            p.missing_fields(&origin("printer", "", " ")),
            vec![ReportField::Contact]
        );
    }
}
