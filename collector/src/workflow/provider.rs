//! Provider service requests (000 step 5, 003, 004 step 4.4).
//!
//! A request is scheduled or unplanned (a sudden failure), has a priority and an agreed
//! date and time, and ends with a verification that the service was delivered as agreed.
//! Work that affects the network needs one week's notice to all staff (003 item 4): the
//! notice becomes due one week before the agreed time and the engine's `tick` emits it, so
//! the rule is enforced by the same timer as the SLA. A scheduled request that leaves less
//! than a week is refused (reschedule it, or mark it unplanned); an unplanned one notifies
//! at once, since the network is already affected.
use super::incident::{
    Deadline, DeviceContext, Incident, Level, Priority, ProviderRequest, ProviderRequestSpec,
    ServiceKind, Stamp,
};
use super::time::{Millis, WEEK};

/// Why a provider request cannot be made as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// No provider named and no warranty to suggest one.
    #[error("no provider named and the asset has no warranty in force to suggest one")]
    NoProvider,
    /// No provider named, and the asset's warranty has expired (004 4.4): the request
    /// must go to the provider of the contract that covers the asset instead.
    #[error(
        "no provider named, and the asset's warranty with {provider} expired on {until}: \
         name the provider of the support contract for this asset"
    )]
    WarrantyExpired {
        /// The warranty's provider.
        provider: String,
        /// When it ended (UTC).
        until: String,
    },
    /// Scheduled network work agreed less than a week ahead.
    #[error(
        "scheduled work that affects the network needs one week's notice to all staff: \
         agree a time at or after {} (UTC), or mark the request unplanned",
        super::time::rfc3339(*.earliest)
    )]
    NoticeTooShort {
        /// The earliest acceptable agreed time.
        earliest: Millis,
    },
}

/// The warranty provider to suggest for `incident` at `now`, if its asset is under warranty.
pub fn suggested_provider(incident: &Incident, now: Millis) -> Option<&str> {
    warranty_provider(&incident.context, now)
}

/// The warranty provider of the asset `context` describes, if its warranty is in force at
/// `now`.
pub fn warranty_provider(context: &DeviceContext, now: Millis) -> Option<&str> {
    context
        .warranty
        .as_ref()
        .filter(|w| w.until >= now)
        .map(|w| w.provider.as_str())
}

/// Builds the request record, or says why it cannot be made.
pub(crate) fn build_request(
    incident: &Incident,
    spec: &ProviderRequestSpec,
    requested_by: &str,
    return_level: Level,
    now: Millis,
) -> Result<ProviderRequest, ProviderError> {
    let suggested = suggested_provider(incident, now);
    let (provider, under_warranty) = match (&spec.provider, suggested) {
        (Some(p), s) => (p.clone(), s == Some(p.as_str())),
        (None, Some(s)) => (s.to_owned(), true),
        (None, None) => {
            return Err(match &incident.context.warranty {
                Some(w) => ProviderError::WarrantyExpired {
                    provider: w.provider.clone(),
                    until: super::time::rfc3339(w.until),
                },
                None => ProviderError::NoProvider,
            })
        }
    };
    let notice_due_at = notice_due(spec.kind, spec.affects_network, spec.agreed_at, now)?;
    Ok(ProviderRequest {
        provider,
        under_warranty,
        kind: spec.kind,
        priority: spec
            .priority
            .or_else(|| incident.priority())
            .unwrap_or(Priority::P3),
        agreed_at: spec.agreed_at,
        affects_network: spec.affects_network,
        conditions: spec.conditions.clone(),
        requested_at: now,
        requested_by: requested_by.to_owned(),
        return_level,
        notice_due_at,
        notice_sent_at: None,
        delivery: None,
        id: spec.request.clone().unwrap_or_else(|| {
            format!(
                "{}-{}",
                incident.number,
                incident.provider_requests.len() + 1
            )
        }),
        respond_by: spec.respond_within.map(|d| now.saturating_add(d.ms())),
        resolve_by: spec
            .resolve_within
            .map(|d| spec.agreed_at.max(now).saturating_add(d.ms())),
        overdue: Vec::new(),
        accepted: None,
        proposed: None,
        done: None,
        rejections: Vec::new(),
    })
}

/// When the all-staff notice of work agreed at `agreed_at` is due, asked at `now`: none
/// for work that leaves the network alone, at once for a sudden failure (the network is
/// already affected), a week before for scheduled work, which is refused with less notice.
pub(crate) fn notice_due(
    kind: ServiceKind,
    affects_network: bool,
    agreed_at: Millis,
    now: Millis,
) -> Result<Option<Millis>, ProviderError> {
    if !affects_network {
        return Ok(None);
    }
    Ok(Some(match kind {
        ServiceKind::Unplanned => now,
        ServiceKind::Scheduled => {
            let earliest = now.saturating_add(WEEK);
            if agreed_at < earliest {
                return Err(ProviderError::NoticeTooShort { earliest });
            }
            agreed_at - WEEK
        }
    }))
}

/// Agrees a new date for `req` at `now` (the provider proposed it, or the coordinator
/// moved the visit): the week's rule is checked again from now, the notice is due again
/// for the new date, and the work's deadline moves with it. A provider's proposal of that
/// same date counts as its acceptance; any other date waits for the provider to accept.
pub(crate) fn reschedule(
    req: &mut ProviderRequest,
    agreed_at: Millis,
    by: Stamp,
) -> Result<(), ProviderError> {
    let notice = notice_due(req.kind, req.affects_network, agreed_at, by.at)?;
    let within = req
        .resolve_by
        .map(|t| t.saturating_sub(req.agreed_at.max(req.requested_at)));
    req.notice_due_at = notice;
    req.notice_sent_at = None;
    req.resolve_by = within.map(|w| agreed_at.max(by.at).saturating_add(w));
    req.overdue.retain(|o| o.deadline != Deadline::Resolution);
    req.accepted = match req.proposed.take() {
        Some(p) if p.date == agreed_at => Some(p.stamp),
        _ => None,
    };
    req.agreed_at = agreed_at;
    Ok(())
}
