//! Triage rules: diagnosis and classification (001 activity 2, 004 steps 3-4).
//!
//! A TOML file of rules, first match wins, maps the fault kind or report category, the
//! severity and the device tags to a category, impact, urgency, level, group, required
//! resources and the specialised path of 004 4.2; the priority comes from an impact ×
//! urgency matrix unless a rule sets it. Defaults live in code ([`RulesConfig::default`]) and
//! [`print_rules`] renders them as the file users start from; first-match-wins keeps the
//! rules readable top to bottom at the cost of having to order specific rules first.
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use vigia_protocol::{FaultKind, Severity, Urgency};

use super::incident::{
    Classification, DeviceContext, Impact, Level, Origin, Priority, SpecialisedPath,
};

/// The triage rules file (`vigia-collector print-rules` prints the defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Priority for each impact (rows) and urgency (columns: low, medium, high, critical).
    #[serde(default)]
    pub matrix: Matrix,
    /// The rules, tried in order; the first that matches classifies the incident.
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
    /// The classification when no rule matches.
    #[serde(default = "fallback_outcome")]
    pub fallback: Outcome,
}

/// The impact × urgency matrix. Each row lists the priority for urgency
/// low, medium, high and critical, in that order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matrix {
    /// Impact "high" (a team, a site, a critical service).
    pub high: [Priority; 4],
    /// Impact "medium".
    pub medium: [Priority; 4],
    /// Impact "low" (one person, with a workaround).
    pub low: [Priority; 4],
}

impl Default for Matrix {
    fn default() -> Self {
        use Priority::*;
        Self {
            high: [P3, P2, P1, P1],
            medium: [P4, P3, P2, P1],
            low: [P4, P4, P3, P2],
        }
    }
}

impl Matrix {
    /// The priority for `impact` and `urgency`.
    pub fn priority(&self, impact: Impact, urgency: Urgency) -> Priority {
        let row = match impact {
            Impact::High => &self.high,
            Impact::Medium => &self.medium,
            Impact::Low => &self.low,
        };
        row[match urgency {
            Urgency::Low => 0,
            Urgency::Medium => 1,
            Urgency::High => 2,
            Urgency::Critical => 3,
        }]
    }
}

/// One triage rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A unique name, recorded in the incident's classification.
    pub name: String,
    /// When the rule applies.
    #[serde(rename = "match", default)]
    pub when: Match,
    /// What it sets.
    pub set: Outcome,
}

/// The conditions of a rule; all given conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Fault kinds the rule applies to. With `categories` also empty, the rule applies to
    /// every fault and every report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<FaultKind>,
    /// Report categories the rule applies to (compared without case).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Lowest fault severity the rule applies to; a rule with it never matches a report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
    /// Device tags that must all be present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// What a rule sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// Service category ("hardware/storage").
    pub category: String,
    /// Impact.
    pub impact: Impact,
    /// Urgency; when absent, the reporter's urgency, or for faults the severity's
    /// (critical → critical, major → high, minor → medium, otherwise low).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urgency: Option<Urgency>,
    /// Priority; when absent, from the matrix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Level the incident starts at (1, 2 or 3).
    pub level: Level,
    /// Group that works it.
    pub group: String,
    /// Physical and logical resources needed (000 step 4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// The specialised path of 004 4.2, if the work goes beyond a first-level fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<SpecialisedPath>,
}

/// Why a rules file is not usable.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// Not valid TOML or the wrong shape (unknown field, bad enum value...).
    #[error("{file}: {source}")]
    Parse {
        /// The file.
        file: String,
        /// What toml said, with the position.
        source: toml::de::Error,
    },
    /// Parsed, but a value is not acceptable.
    #[error("{file}: {field}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// The field, as a path (`rule[2].set.group`).
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn fallback_outcome() -> Outcome {
    Outcome {
        category: "unclassified".into(),
        impact: Impact::Medium,
        urgency: None,
        priority: None,
        level: Level::L1,
        group: "service-desk".into(),
        resources: Vec::new(),
        path: None,
    }
}

#[allow(clippy::too_many_arguments)] // a table of defaults reads best flat
fn rule(
    name: &str,
    when: Match,
    category: &str,
    impact: Impact,
    level: Level,
    group: &str,
    resources: &[&str],
    path: Option<SpecialisedPath>,
) -> Rule {
    Rule {
        name: name.into(),
        when,
        set: Outcome {
            category: category.into(),
            impact,
            urgency: None,
            priority: None,
            level,
            group: group.into(),
            resources: resources.iter().map(|s| (*s).into()).collect(),
            path,
        },
    }
}

fn kinds(k: &[FaultKind]) -> Match {
    Match {
        kinds: k.to_vec(),
        ..Match::default()
    }
}

fn categories(c: &[&str]) -> Match {
    Match {
        categories: c.iter().map(|s| (*s).into()).collect(),
        ..Match::default()
    }
}

impl Default for RulesConfig {
    fn default() -> Self {
        use FaultKind::*;
        use Impact::*;
        use Level::*;
        use SpecialisedPath::*;
        Self {
            matrix: Matrix::default(),
            rules: vec![
                rule(
                    "server-hardware",
                    Match {
                        min_severity: Some(Severity::Major),
                        tags: vec!["server".into()],
                        ..Match::default()
                    },
                    "hardware/server",
                    High,
                    L2,
                    "specialist",
                    &["maintenance window", "spare parts"],
                    None,
                ),
                rule(
                    "data-at-risk",
                    kinds(&[FsReadOnly, RaidDegraded, DiskHealth, DiskIoErrors]),
                    "hardware/storage",
                    High,
                    L2,
                    "on-site",
                    &["replacement disk", "backup of the device"],
                    Some(Acquisition),
                ),
                rule(
                    "memory-errors",
                    kinds(&[MemoryEcc]),
                    "hardware/memory",
                    Medium,
                    L2,
                    "on-site",
                    &["replacement memory module"],
                    Some(Acquisition),
                ),
                rule(
                    "cooling",
                    kinds(&[Overheating, FanFailure]),
                    "hardware/cooling",
                    Medium,
                    L2,
                    "on-site",
                    &["replacement fan", "cleaning kit"],
                    Some(Acquisition),
                ),
                rule(
                    "pcie-errors",
                    kinds(&[PcieAer]),
                    "hardware/board",
                    Medium,
                    L2,
                    "specialist",
                    &["hardware diagnostics"],
                    None,
                ),
                rule(
                    "battery",
                    kinds(&[BatteryWear]),
                    "hardware/battery",
                    Low,
                    L1,
                    "service-desk",
                    &["replacement battery"],
                    Some(Acquisition),
                ),
                rule(
                    "capacity",
                    kinds(&[DiskSpace, DiskInodes, MemoryPressure]),
                    "capacity",
                    Medium,
                    L1,
                    "service-desk",
                    &["remote session"],
                    None,
                ),
                rule(
                    "network-link",
                    kinds(&[NicLinkLost, NicErrors]),
                    "network",
                    Medium,
                    L1,
                    "service-desk",
                    &["remote session", "cable tester"],
                    None,
                ),
                rule(
                    "report-network",
                    categories(&["network"]),
                    "network",
                    Medium,
                    L1,
                    "service-desk",
                    &["remote session"],
                    None,
                ),
                rule(
                    "report-application",
                    categories(&["software", "application"]),
                    "software/application",
                    Medium,
                    L1,
                    "service-desk",
                    &["remote session"],
                    Some(ApplicationChange),
                ),
                rule(
                    "report-development",
                    categories(&["development"]),
                    "software/development",
                    Low,
                    L2,
                    "specialist",
                    &[],
                    Some(SoftwareDevelopment),
                ),
                rule(
                    "report-hardware",
                    categories(&["hardware", "printer", "purchase"]),
                    "hardware",
                    Medium,
                    L1,
                    "service-desk",
                    &[],
                    None,
                ),
            ],
            fallback: fallback_outcome(),
        }
    }
}

impl RulesConfig {
    /// Parses and validates a rules file; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<TriageRules, RulesError> {
        let parsed: RulesConfig = toml::from_str(text).map_err(|source| RulesError::Parse {
            file: file.to_owned(),
            source,
        })?;
        parsed.validate(file)
    }

    /// Checks the values and builds the runtime rules.
    pub fn validate(self, file: &str) -> Result<TriageRules, RulesError> {
        let invalid = |field: String, message: &str| RulesError::Invalid {
            file: file.to_owned(),
            field,
            message: message.to_owned(),
        };
        let mut names = BTreeSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            if r.name.trim().is_empty() {
                return Err(invalid(format!("rule[{i}].name"), "must not be empty"));
            }
            if !names.insert(r.name.as_str()) {
                return Err(invalid(
                    format!("rule[{i}].name"),
                    &format!("{:?} is used by an earlier rule", r.name),
                ));
            }
            check_outcome(&r.set, &format!("rule[{i}].set"), &invalid)?;
            if r.when.categories.iter().any(|c| c.trim().is_empty()) {
                return Err(invalid(
                    format!("rule[{i}].match.categories"),
                    "must not contain an empty category",
                ));
            }
        }
        check_outcome(&self.fallback, "fallback", &invalid)?;
        Ok(TriageRules { config: self })
    }
}

fn check_outcome(
    o: &Outcome,
    at: &str,
    invalid: &impl Fn(String, &str) -> RulesError,
) -> Result<(), RulesError> {
    if o.category.trim().is_empty() {
        return Err(invalid(format!("{at}.category"), "must not be empty"));
    }
    if o.group.trim().is_empty() {
        return Err(invalid(format!("{at}.group"), "must not be empty"));
    }
    Ok(())
}

/// Validated triage rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriageRules {
    config: RulesConfig,
}

/// The urgency a fault's severity implies.
pub fn urgency_of(severity: Severity) -> Urgency {
    match severity {
        Severity::Critical => Urgency::Critical,
        Severity::Major => Urgency::High,
        Severity::Minor => Urgency::Medium,
        Severity::Warning | Severity::Info => Urgency::Low,
    }
}

impl Match {
    fn matches(&self, origin: &Origin, severity: Option<Severity>, ctx: &DeviceContext) -> bool {
        let what = match origin {
            Origin::Fault { kind, .. } => {
                if self.kinds.is_empty() {
                    self.categories.is_empty()
                } else {
                    self.kinds.contains(kind)
                }
            }
            Origin::Report { category, .. } => {
                self.min_severity.is_none()
                    && if self.categories.is_empty() {
                        self.kinds.is_empty()
                    } else {
                        self.categories
                            .iter()
                            .any(|c| c.trim().eq_ignore_ascii_case(category.trim()))
                    }
            }
            // Staff classify a service when they ask for it; no rule applies.
            Origin::Service { .. } => false,
        };
        let sev = match (self.min_severity, severity) {
            (None, _) => true,
            (Some(min), Some(s)) => s >= min,
            (Some(_), None) => false,
        };
        let tags = self.tags.iter().all(|t| ctx.tags.iter().any(|d| d == t));
        what && sev && tags
    }
}

impl TriageRules {
    /// The rules as parsed.
    pub fn config(&self) -> &RulesConfig {
        &self.config
    }

    /// Classifies an incident's origin. `severity` is the worst severity seen for a fault.
    pub fn classify(
        &self,
        origin: &Origin,
        severity: Option<Severity>,
        ctx: &DeviceContext,
    ) -> Classification {
        let (name, out) = self
            .config
            .rules
            .iter()
            .find(|r| r.when.matches(origin, severity, ctx))
            .map(|r| (r.name.as_str(), &r.set))
            .unwrap_or(("fallback", &self.config.fallback));
        let urgency = out.urgency.unwrap_or(match origin {
            Origin::Report { urgency, .. } => *urgency,
            Origin::Fault { .. } => urgency_of(severity.unwrap_or(Severity::Warning)),
            Origin::Service { .. } => Urgency::Medium,
        });
        Classification {
            category: out.category.clone(),
            impact: out.impact,
            urgency,
            priority: out
                .priority
                .unwrap_or_else(|| self.config.matrix.priority(out.impact, urgency)),
            level: out.level,
            group: out.group.clone(),
            resources: out.resources.clone(),
            path: out.path,
            rule: name.to_owned(),
        }
    }
}

/// The default rules as a TOML file, for `vigia-collector print-rules`; the same text is
/// committed as `collector/rules/default-rules.toml` (a test keeps the two equal).
pub fn print_rules() -> Result<String, toml::ser::Error> {
    let body = toml::to_string(&RulesConfig::default())?;
    Ok(format!(
        "# Vigía triage rules: diagnosis and classification of incidents.\n\
         # Rules are tried in order; the first whose [rule.match] holds sets the\n\
         # classification. match: kinds (fault kinds), categories (report categories),\n\
         # min_severity (faults only), tags (all required). set: category, impact\n\
         # (low|medium|high), urgency (low|medium|high|critical; default: the reporter's,\n\
         # or from the fault severity), priority (P1-P4; default: from [matrix]), level\n\
         # (1-3), group, resources, path (software_development|acquisition|\n\
         # application_change). [matrix] rows are impacts, columns urgency low, medium,\n\
         # high, critical.\n\n{body}"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use vigia_protocol::Evidence;

    fn fault(kind: FaultKind) -> Origin {
        Origin::Fault {
            kind,
            subject: "/".into(),
            severity: Severity::Warning,
            evidence: Evidence {
                value: 1.0,
                threshold: 0.0,
                unit: "count".try_into().unwrap(),
                source: "test".try_into().unwrap(),
            },
            message: String::new(),
        }
    }

    fn report(category: &str, urgency: Urgency) -> Origin {
        Origin::Report {
            report_id: 1,
            category: category.into(),
            summary: "s".into(),
            text: String::new(),
            reporter: "ana".into(),
            contact: String::new(),
            urgency,
            snapshot: vec![],
            open_faults: vec![],
        }
    }

    #[test]
    fn the_rules_file_in_the_repository_is_the_default() {
        let file = include_str!("../../rules/default-rules.toml");
        assert!(
            file == print_rules().unwrap(),
            "collector/rules/default-rules.toml differs from the defaults in code; \
             regenerate it with `vigia-collector print-rules > collector/rules/default-rules.toml`"
        );
    }

    #[test]
    fn printed_defaults_parse_back_to_the_defaults() {
        let text = print_rules().unwrap();
        let parsed = RulesConfig::parse(&text, "default-rules.toml").unwrap();
        assert_eq!(parsed.config(), &RulesConfig::default());
    }

    #[test]
    fn matrix_sets_priority_from_impact_and_urgency() {
        let m = Matrix::default();
        assert_eq!(m.priority(Impact::High, Urgency::Critical), Priority::P1);
        assert_eq!(m.priority(Impact::Low, Urgency::Low), Priority::P4);
        assert_eq!(m.priority(Impact::Medium, Urgency::High), Priority::P2);
    }

    #[test]
    fn fault_rules_use_severity_for_urgency() {
        let rules = TriageRules::default();
        let ctx = DeviceContext::default();
        let c = rules.classify(
            &fault(FaultKind::RaidDegraded),
            Some(Severity::Critical),
            &ctx,
        );
        assert_eq!(c.rule, "data-at-risk");
        assert_eq!(c.level, Level::L2);
        assert_eq!(c.priority, Priority::P1);
        assert_eq!(c.path, Some(SpecialisedPath::Acquisition));
        assert!(c.resources.iter().any(|r| r == "replacement disk"));
        let c = rules.classify(&fault(FaultKind::DiskSpace), Some(Severity::Warning), &ctx);
        assert_eq!((c.rule.as_str(), c.priority), ("capacity", Priority::P4));
    }

    #[test]
    fn tags_and_min_severity_select_rules() {
        let rules = TriageRules::default();
        let server = DeviceContext {
            tags: vec!["server".into()],
            warranty: None,
        };
        let c = rules.classify(
            &fault(FaultKind::DiskSpace),
            Some(Severity::Critical),
            &server,
        );
        assert_eq!(c.rule, "server-hardware");
        let c = rules.classify(&fault(FaultKind::DiskSpace), Some(Severity::Minor), &server);
        assert_eq!(
            c.rule, "capacity",
            "below min_severity the server rule is skipped"
        );
        // min_severity rules never match reports
        let c = rules.classify(&report("network", Urgency::High), None, &server);
        assert_eq!(c.rule, "report-network");
    }

    #[test]
    fn reports_match_category_without_case_and_keep_reporter_urgency() {
        let rules = TriageRules::default();
        let ctx = DeviceContext::default();
        let c = rules.classify(&report("Software", Urgency::High), None, &ctx);
        assert_eq!(c.rule, "report-application");
        assert_eq!(c.urgency, Urgency::High);
        assert_eq!(c.priority, Priority::P2);
        assert_eq!(c.path, Some(SpecialisedPath::ApplicationChange));
        let c = rules.classify(&report("coffee machine", Urgency::Low), None, &ctx);
        assert_eq!(
            (c.rule.as_str(), c.category.as_str()),
            ("fallback", "unclassified")
        );
    }

    #[test]
    fn bad_files_name_the_field() {
        let unknown = "[[rule]]\nname = \"x\"\nbogus = 1\n[rule.set]\ncategory=\"c\"\nimpact=\"low\"\nlevel=1\ngroup=\"g\"\n";
        let e = RulesConfig::parse(unknown, "r.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.toml") && e.contains("bogus"), "{e}");

        let level4 = "[[rule]]\nname = \"x\"\n[rule.set]\ncategory=\"c\"\nimpact=\"low\"\nlevel=4\ngroup=\"g\"\n";
        let e = RulesConfig::parse(level4, "r.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("level"), "{e}");

        let dup = "[[rule]]\nname = \"x\"\n[rule.set]\ncategory=\"c\"\nimpact=\"low\"\nlevel=1\ngroup=\"g\"\n\
                   [[rule]]\nname = \"x\"\n[rule.set]\ncategory=\"c\"\nimpact=\"low\"\nlevel=1\ngroup=\"g\"\n";
        let e = RulesConfig::parse(dup, "r.toml").unwrap_err().to_string();
        assert!(e.contains("rule[1].name"), "{e}");

        let empty_group = "[[rule]]\nname = \"x\"\n[rule.set]\ncategory=\"c\"\nimpact=\"low\"\nlevel=1\ngroup=\" \"\n";
        let e = RulesConfig::parse(empty_group, "r.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rule[0].set.group"), "{e}");

        let kind = "[[rule]]\nname = \"x\"\n[rule.match]\nkinds=[\"disk_explodes\"]\n[rule.set]\ncategory=\"c\"\nimpact=\"low\"\nlevel=1\ngroup=\"g\"\n";
        let e = RulesConfig::parse(kind, "r.toml").unwrap_err().to_string();
        assert!(e.contains("disk_explodes"), "{e}");
    }
}
