//! The *Servicios soporte* record of a period, as CSV or JSON.
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use vigia_protocol::Millis;

use super::state::{bad_request, task_failed, ApiError, HttpState};
use crate::workflow::{self, Period};

/// Query of `GET /api/export`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// First day or instant included (`2026-11-01`, RFC 3339, or ms since the epoch).
    pub from: Option<String>,
    /// First day or instant excluded.
    pub to: Option<String>,
    /// `csv` (default) or `json`.
    pub format: Option<String>,
}

/// Parses `2026-11-01`, `2026-11-01T10:00:00Z` (UTC only) or ms since the epoch.
pub fn parse_instant(s: &str) -> Result<Millis, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|e| format!("{s:?}: {e}"));
    }
    let bad =
        || format!("{s:?} is not a date (2026-11-01), a UTC time (2026-11-01T10:00:00Z) or ms");
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t.trim_end_matches('Z'))),
        None => (s, None),
    };
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>());
    let (Some(Ok(y)), Some(Ok(m)), Some(Ok(day))) = (d.next(), d.next(), d.next()) else {
        return Err(bad());
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || y < 1970 {
        return Err(bad());
    }
    let mut secs = days_from_civil(y, m, day) * 86_400;
    if let Some(t) = time {
        let mut p = t.splitn(3, ':').map(|p| p.parse::<i64>());
        let h = p.next().and_then(Result::ok).ok_or_else(bad)?;
        let mi = p.next().and_then(Result::ok).ok_or_else(bad)?;
        let sec = match p.next() {
            Some(r) => r.map_err(|_| bad())?,
            None => 0,
        };
        if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..61).contains(&sec) {
            return Err(bad());
        }
        secs += h * 3600 + mi * 60 + sec;
    }
    u64::try_from(secs).map(|s| s * 1000).map_err(|_| bad())
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(super) async fn export(
    State(st): State<HttpState>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let parse = |v: &Option<String>| {
        v.as_deref()
            .filter(|s| !s.is_empty())
            .map(parse_instant)
            .transpose()
            .map_err(bad_request)
    };
    let period = Period {
        from: parse(&q.from)?,
        to: parse(&q.to)?,
    };
    let store = st.store.clone();
    let rows = tokio::task::spawn_blocking(move || store.export(&period))
        .await
        .map_err(task_failed)??;
    match q.format.as_deref().unwrap_or("csv") {
        "csv" => Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            workflow::to_csv(&rows),
        )
            .into_response()),
        "json" => {
            let text = workflow::to_json(&rows)
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("export: {e}")))?;
            Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
        }
        other => Err(bad_request(format!(
            "unknown format {other:?}; use csv or json"
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn instants_parse() {
        assert_eq!(parse_instant("0").unwrap(), 0);
        assert_eq!(parse_instant("1970-01-02").unwrap(), 86_400_000);
        assert_eq!(
            parse_instant("2026-11-22T02:45:00Z").unwrap(),
            1_795_315_500_000
        );
        assert_eq!(
            parse_instant("2000-02-29T12:34:56Z").unwrap(),
            951_827_696_000
        );
        for bad in ["", "yesterday", "2026-13-01", "2026-11-22T25:00:00Z"] {
            assert!(parse_instant(bad).is_err(), "{bad:?}");
        }
    }
}
