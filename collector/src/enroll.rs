//! Enrolling a fleet from a spreadsheet: `vigia-collector device enroll --from
//! devices.csv` creates every device's broker account in one run and writes one ready
//! agent config per device.
//!
//! The rules are those of `broker-config/enroll-device` (one device at a time): a device
//! id is a [`DeviceId`]; reserved accounts (the collector's, every `user` of the ACL) are
//! refused; an id already in the password file is refused unless rotation is asked for;
//! passwords never appear in a process's arguments; the password file is never readable
//! by others. Two more for a whole file: every row is checked before anything is created
//! (all the malformed rows are reported, each with its line number), and the run is all
//! or nothing. The new password file is written beside the old one and renamed over it
//! (the one commit point), after the configs are complete in a staging directory that is
//! renamed into place just after; a failure before the rename leaves the password file
//! and the output directory as they were.
//!
//! Parsing and checking ([`parse_csv`], [`plan`]) are pure; [`apply`] does the files and
//! runs `mosquitto_passwd -U` once for all the new hashes. [`revoke`] takes accounts out
//! the same way (all the listed or none, one rename). [`apply_dynsec`] makes the accounts
//! in the broker's dynamic-security plugin instead, usable at once, all or nothing by
//! undoing what it created (the plugin has no transactions).
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vigia_protocol::{BrokerUrl, DeviceId};

/// The columns a devices file may have; `id` is required, the others may be absent or
/// empty.
pub const COLUMNS: [&str; 5] = ["id", "hostname", "site", "tags", "owner"];
/// Tags an agent keeps (the protocol's bound), the site's included.
pub const MAX_TAGS: usize = 8;
/// Bytes in one tag.
pub const MAX_TAG: usize = 32;

/// One device of the file, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Line of the file it came from (1 is the header).
    pub line: usize,
    /// The device id: its broker account and the `{id}` of its topics.
    pub id: DeviceId,
    /// Its host name, for the tools that push the configs (may be empty).
    pub hostname: String,
    /// Its site (becomes the tag `site-<site>`), may be empty.
    pub site: String,
    /// Its tags, for the triage rules.
    pub tags: Vec<String>,
    /// Who answers for it (recorded in its config and the index), may be empty.
    pub owner: String,
}

/// What is wrong with one line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The line (1 is the header).
    pub line: usize,
    /// Why.
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Why an enrolment did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The file has malformed rows; nothing was created.
    #[error("{file}: {} malformed (nothing was created):\n{}", plural(.errors.len()), lines(.errors))]
    Rows {
        /// The devices file.
        file: String,
        /// Every problem found.
        errors: Vec<LineError>,
    },
    /// A setting given on the command line is wrong.
    #[error("{0}")]
    Setting(String),
    /// Reading or writing a file failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `mosquitto_passwd` failed or is missing.
    #[error("mosquitto_passwd: {0}")]
    Passwd(String),
    /// No random password could be made.
    #[error("cannot make a password: {0}")]
    Random(#[from] crate::auth::SecretError),
    /// The broker's dynamic-security plugin failed; nothing was created.
    #[error("{0} (nothing was created)")]
    Broker(#[from] crate::dynsec::DynsecError),
}

fn plural(n: usize) -> String {
    if n == 1 {
        "1 row is".into()
    } else {
        format!("{n} rows are")
    }
}

fn lines(errors: &[LineError]) -> String {
    errors
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> EnrollError + 'a {
    move |source| EnrollError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Where each of `columns` is among a header's `names` (without case; `usize::MAX` when
/// absent). A name that is no column, or one named twice, is an error of line `line`.
pub(crate) fn header_columns<const N: usize>(
    line: usize,
    names: &[String],
    columns: &[&str; N],
    errors: &mut Vec<LineError>,
) -> [usize; N] {
    let mut cols = [usize::MAX; N];
    for (i, name) in names.iter().enumerate() {
        let name = name.to_ascii_lowercase();
        match columns.iter().position(|c| *c == name) {
            Some(k) if cols[k] == usize::MAX => cols[k] = i,
            Some(_) => errors.push(LineError {
                line,
                message: format!("column {name:?} appears twice"),
            }),
            None => errors.push(LineError {
                line,
                message: format!(
                    "unknown column {name:?} (the columns are {})",
                    columns.join(", ")
                ),
            }),
        }
    }
    cols
}

/// Splits one CSV record (RFC 4180: quoted cells, `""` inside quotes), or says why not.
pub(crate) fn split_record(line: &str) -> Result<Vec<String>, String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') if cell.trim().is_empty() && !was_quoted => {
                cell.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, '"') => return Err("a quote in the middle of a cell".into()),
            (false, ',') => {
                cells.push(std::mem::take(&mut cell));
                was_quoted = false;
            }
            (false, c) if was_quoted && !c.is_whitespace() => {
                return Err("text after a quoted cell's closing quote".into())
            }
            (false, c) => cell.push(c),
        }
    }
    if quoted {
        return Err("a quoted cell is not closed (cells cannot span lines)".into());
    }
    cells.push(cell);
    Ok(cells.into_iter().map(|c| c.trim().to_string()).collect())
}

fn clean(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.chars().any(char::is_control) {
        return Err(format!("{field} has a control character"));
    }
    if value.len() > max {
        return Err(format!("{field} is over {max} bytes"));
    }
    Ok(())
}

fn hostname_ok(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn tag_ok(t: &str) -> Result<(), String> {
    if t.len() > MAX_TAG {
        return Err(format!("tag {t:?} is over {MAX_TAG} bytes"));
    }
    if !t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(format!(
            "tag {t:?}: use letters, digits and - _ . : (tags are separated by ; or spaces)"
        ));
    }
    Ok(())
}

fn parse_row(line: usize, cols: &[usize; 5], cells: &[String]) -> Result<Row, String> {
    let get = |i: usize| {
        cols.get(i)
            .and_then(|&c| cells.get(c))
            .map_or("", String::as_str)
    };
    let id = get(0);
    if id.is_empty() {
        return Err("the id is empty".into());
    }
    let id = DeviceId::new(id).map_err(|e| format!("id {id:?}: {e}"))?;
    let hostname = get(1).to_ascii_lowercase();
    if !hostname.is_empty() && !hostname_ok(&hostname) {
        return Err(format!("hostname {hostname:?} is not a host name"));
    }
    let site = get(2).to_string();
    clean("site", &site, 64)?;
    let owner = get(4).to_string();
    clean("owner", &owner, 128)?;
    let mut tags: Vec<String> = Vec::new();
    if !site.is_empty() {
        let t = format!("site-{site}");
        tag_ok(&t).map_err(|e| format!("site {site:?} as a tag: {e}"))?;
        tags.push(t);
    }
    for t in get(3).split([';', ' ', '\t']).filter(|t| !t.is_empty()) {
        tag_ok(t)?;
        if !tags.iter().any(|x| x == t) {
            tags.push(t.to_string());
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "{} tags (the site's included); an agent keeps at most {MAX_TAGS}",
            tags.len()
        ));
    }
    Ok(Row {
        line,
        id,
        hostname,
        site,
        tags,
        owner,
    })
}

/// Reads a devices file: a header naming its columns (any order; `id` required, the
/// others of [`COLUMNS`] optional), then one device per line. Blank lines and lines
/// starting with `#` are skipped. Tags are separated by `;` or spaces. Every bad line is
/// reported, with duplicates of an id or host name named at both lines.
pub fn parse_csv(text: &str) -> Result<Vec<Row>, Vec<LineError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut errors = Vec::new();
    let mut records = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((header_line, header)) = records.next() else {
        return Err(vec![LineError {
            line: 1,
            message: format!(
                "the file is empty; its first line names the columns ({})",
                COLUMNS.join(",")
            ),
        }]);
    };
    let names = match split_record(header) {
        Ok(n) => n,
        Err(message) => {
            return Err(vec![LineError {
                line: header_line,
                message,
            }])
        }
    };
    let cols = header_columns(header_line, &names, &COLUMNS, &mut errors);
    if cols[0] == usize::MAX {
        errors.push(LineError {
            line: header_line,
            message: format!(
                "no id column (the header must name the columns: {})",
                COLUMNS.join(",")
            ),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    let mut hosts: BTreeMap<String, usize> = BTreeMap::new();
    for (line, record) in records {
        let row = split_record(record).and_then(|cells| {
            if cells.len() > names.len() {
                return Err(format!("{} cells for {} columns", cells.len(), names.len()));
            }
            parse_row(line, &cols, &cells)
        });
        match row {
            Ok(r) => {
                if let Some(first) = ids.insert(r.id.as_str().to_string(), line) {
                    errors.push(LineError {
                        line,
                        message: format!("id {} is also on line {first}", r.id),
                    });
                }
                if !r.hostname.is_empty() {
                    if let Some(first) = hosts.insert(r.hostname.clone(), line) {
                        errors.push(LineError {
                            line,
                            message: format!("hostname {} is also on line {first}", r.hostname),
                        });
                    }
                }
                rows.push(r);
            }
            Err(message) => errors.push(LineError { line, message }),
        }
    }
    if rows.is_empty() && errors.is_empty() {
        errors.push(LineError {
            line: header_line,
            message: "no devices after the header".into(),
        });
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

/// The accounts a password file holds (`name:hash` lines).
pub fn passwd_accounts(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split_once(':').map(|(u, _)| u.trim().to_string()))
        .filter(|u| !u.is_empty() && !u.starts_with('#'))
        .collect()
}

/// The `user` entries of a Mosquitto ACL file: accounts with rights of their own, which no
/// device may take.
pub fn acl_users(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("user")).then(|| w.next()).flatten()
        })
        .map(str::to_string)
        .collect()
}

/// Checks the rows against the broker's accounts: a reserved name, or an id already
/// enrolled without `rotate`, is an error of its line.
pub fn plan(
    rows: &[Row],
    enrolled: &BTreeSet<String>,
    reserved: &BTreeSet<String>,
    rotate: bool,
) -> Result<(), Vec<LineError>> {
    let mut errors = Vec::new();
    for r in rows {
        let id = r.id.as_str();
        if reserved.contains(id) {
            errors.push(LineError {
                line: r.line,
                message: format!(
                    "{id} is a reserved account (the collector's or the ACL's); a device cannot use it"
                ),
            });
        } else if enrolled.contains(id) && !rotate {
            errors.push(LineError {
                line: r.line,
                message: format!(
                    "{id} is already enrolled; its password is unchanged (--rotate gives the listed devices new ones)"
                ),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// What the configs say about the broker, and where they go.
#[derive(Debug, Clone)]
pub struct Target {
    /// The broker URL the agents use (`mqtts://broker.example.org:8883`).
    pub broker_url: String,
    /// The CA file path on the devices, for `mqtts://`.
    pub ca_file: Option<PathBuf>,
    /// The directory the configs go to (must not exist, or be empty).
    pub out: PathBuf,
    /// Give devices already enrolled a new password.
    pub rotate: bool,
}

/// Where a broker without the dynamic-security plugin keeps its accounts.
#[derive(Debug, Clone)]
pub struct PasswdFile {
    /// Mosquitto's password file.
    pub path: PathBuf,
    /// The `mosquitto_passwd` program.
    pub mosquitto_passwd: PathBuf,
}

impl Target {
    fn check(&self) -> Result<(), EnrollError> {
        BrokerUrl::parse(&self.broker_url)
            .map_err(|e| EnrollError::Setting(format!("--broker-url {}: {e}", self.broker_url)))?;
        if self.out.exists() {
            let empty = std::fs::read_dir(&self.out)
                .map_err(io("cannot read", &self.out))?
                .next()
                .is_none();
            if !empty {
                return Err(EnrollError::Setting(format!(
                    "{} exists and is not empty; give a new directory for the configs",
                    self.out.display()
                )));
            }
        }
        Ok(())
    }
}

/// Escapes `s` as a TOML basic string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The agent config for one device.
pub fn agent_config(row: &Row, target: &Target, password: &str, today: &str) -> String {
    let mut about = Vec::new();
    if !row.hostname.is_empty() {
        about.push(format!("host {}", row.hostname));
    }
    if !row.site.is_empty() {
        about.push(format!("site {}", row.site));
    }
    if !row.owner.is_empty() {
        about.push(format!("owner {}", row.owner));
    }
    let about = if about.is_empty() {
        String::new()
    } else {
        // Control characters were refused; a comment cannot be ended early by the rest.
        format!(" ({})", about.join(", "))
    };
    let tags = row
        .tags
        .iter()
        .map(|t| toml_str(t))
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = format!(
        "# Vigía agent config for {id}{about}, written by `vigia-collector device enroll` on \
         {today}.\n# Install it as /etc/vigia/agent.toml (mode 0600) on that device, then: \
         systemctl restart vigia-agent\n\n[device]\nid = {idq}\ntags = [{tags}]\n\n[mqtt]\n\
         url = {url}\nusername = {idq}\npassword = {pw}\n",
        id = row.id,
        idq = toml_str(row.id.as_str()),
        url = toml_str(&target.broker_url),
        pw = toml_str(password),
    );
    if let Some(ca) = &target.ca_file {
        s.push_str(&format!(
            "ca_file = {}\n",
            toml_str(&ca.display().to_string())
        ));
    }
    s
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// Accounts added.
    pub added: usize,
    /// Accounts given a new password.
    pub rotated: usize,
    /// Where the configs are.
    pub out: PathBuf,
}

fn write_private(path: &Path, text: &str, mode: u32) -> Result<(), EnrollError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io("cannot create", path))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io("cannot write", path))
}

/// Hashes `name:password` lines with `mosquitto_passwd -U` in a private temporary file;
/// returns the hashed lines.
fn hash_all(
    program: &Path,
    dir: &Path,
    accounts: &[(String, String)],
) -> Result<Vec<String>, EnrollError> {
    let plain = dir.join("hash-me");
    let text: String = accounts.iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
    write_private(&plain, &text, 0o600)?;
    let out = Command::new(program)
        .arg("-U")
        .arg(&plain)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| EnrollError::Passwd(format!("cannot run {}: {e}", program.display())));
    let hashed = out.and_then(|o| {
        if o.status.success() {
            std::fs::read_to_string(&plain).map_err(io("cannot read", &plain))
        } else {
            Err(EnrollError::Passwd(
                String::from_utf8_lossy(&o.stderr).trim().to_string(),
            ))
        }
    });
    let _ = std::fs::remove_file(&plain);
    let hashed = hashed?;
    let lines: Vec<String> = hashed.lines().map(str::to_string).collect();
    let ok = lines.len() == accounts.len()
        && lines.iter().zip(accounts).all(|(l, (u, p))| {
            l.split_once(':')
                .is_some_and(|(name, hash)| name == u && hash != p && hash.starts_with('$'))
        });
    if !ok {
        return Err(EnrollError::Passwd(
            "its -U output is not one hash per account".into(),
        ));
    }
    Ok(lines)
}

/// Where the configs are made before they are moved to `target.out`.
fn staging_dir(target: &Target) -> Result<PathBuf, EnrollError> {
    let out_parent = target
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(out_parent).map_err(io("cannot create", out_parent))?;
    let name = target
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "configs".into());
    Ok(out_parent.join(format!(".{name}.partial-{}", std::process::id())))
}

/// Writes every device's config, with a new password each, and the index into
/// `staging` (mode 0700); returns the accounts, in the rows' order.
fn stage(
    rows: &[Row],
    target: &Target,
    staging: &Path,
    today: &str,
) -> Result<Vec<(DeviceId, String)>, EnrollError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(staging)
        .map_err(io("cannot create", staging))?;
    let mut accounts = Vec::with_capacity(rows.len());
    // Host name first: tools look a host's file up by the first column (Ansible's
    // csvfile lookup).
    let mut index = String::from("hostname,id,site,owner,config\n");
    for r in rows {
        let password = crate::auth::secret::random_token()?;
        let file = format!("{}.toml", r.id);
        write_private(
            &staging.join(&file),
            &agent_config(r, target, &password, today),
            0o600,
        )?;
        index.push_str(&format!(
            "{},{},{},{},{file}\n",
            csv_cell(&r.hostname),
            r.id,
            csv_cell(&r.site),
            csv_cell(&r.owner)
        ));
        accounts.push((r.id.clone(), password));
    }
    write_private(&staging.join("index.csv"), &index, 0o640)?;
    Ok(accounts)
}

/// Moves the staged configs to `target.out` (checked empty, or absent, before).
fn publish(staging: &Path, target: &Target) -> Result<(), EnrollError> {
    if target.out.exists() {
        // Checked empty before anything was made; rename needs it gone.
        std::fs::remove_dir(&target.out).map_err(io("cannot replace", &target.out))?;
    }
    std::fs::rename(staging, &target.out).map_err(io("cannot move the configs to", &target.out))
}

/// Creates every account in the password file and writes every config, or nothing (see
/// the module's notes). `reserved` are the names no device may take; `today` dates the
/// configs.
pub fn apply(
    rows: &[Row],
    target: &Target,
    passwd: &PasswdFile,
    reserved: &BTreeSet<String>,
    today: &str,
) -> Result<Enrolled, EnrollError> {
    target.check()?;
    let old = match std::fs::read_to_string(&passwd.path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("cannot read", &passwd.path)(e)),
    };
    let enrolled = passwd_accounts(old.as_deref().unwrap_or(""));
    plan(rows, &enrolled, reserved, target.rotate).map_err(|errors| EnrollError::Rows {
        file: "devices".into(),
        errors,
    })?;
    let passwd_dir = passwd
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = staging_dir(target)?;
    let new_passwd = passwd_dir.join(format!(
        ".{}.enroll-{}",
        passwd
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = stage_and_commit(
        rows,
        target,
        passwd,
        old.as_deref(),
        &enrolled,
        &staging,
        &new_passwd,
        today,
    );
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
        let _ = std::fs::remove_file(&new_passwd);
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn stage_and_commit(
    rows: &[Row],
    target: &Target,
    passwd: &PasswdFile,
    old: Option<&str>,
    enrolled: &BTreeSet<String>,
    staging: &Path,
    new_passwd: &Path,
    today: &str,
) -> Result<Enrolled, EnrollError> {
    let accounts: Vec<(String, String)> = stage(rows, target, staging, today)?
        .into_iter()
        .map(|(id, pw)| (id.as_str().to_string(), pw))
        .collect();
    let hashed = hash_all(&passwd.mosquitto_passwd, staging, &accounts)?;

    // The new password file: the old accounts (minus those rotated), then the new ones.
    let renewed: BTreeSet<&str> = accounts.iter().map(|(u, _)| u.as_str()).collect();
    let mut text = String::new();
    for l in old.unwrap_or("").lines() {
        let user = l.split_once(':').map(|(u, _)| u.trim());
        if user.is_some_and(|u| renewed.contains(u)) {
            continue;
        }
        text.push_str(l);
        text.push('\n');
    }
    for l in &hashed {
        text.push_str(l);
        text.push('\n');
    }
    // The commit point.
    replace_passwd(&passwd.path, new_passwd, &text)?;
    publish(staging, target)?;
    let rotated = rows
        .iter()
        .filter(|r| enrolled.contains(r.id.as_str()))
        .count();
    Ok(Enrolled {
        added: rows.len() - rotated,
        rotated,
        out: target.out.clone(),
    })
}

/// Rows whose id starts with `vigia-`: the broker's own accounts (the plugin's admin,
/// the collector, the sites' enrolment accounts) are named so.
fn broker_names(rows: &[Row]) -> Vec<LineError> {
    rows.iter()
        .filter(|r| r.id.as_str().starts_with("vigia-"))
        .map(|r| LineError {
            line: r.line,
            message: format!(
                "{}: names starting with \"vigia-\" are the broker's own accounts",
                r.id
            ),
        })
        .collect()
}

/// The same as [`apply`] through the broker's dynamic-security plugin: the accounts
/// exist as soon as this returns, with no file to rewrite and no reload. The plugin has
/// no transactions, so all or nothing is kept by undoing: the rows are checked against
/// the plugin's accounts first (every other account is a reserved name), the configs
/// are staged, then the new accounts are created; should the broker refuse one, those
/// created are deleted again and nothing is written. Passwords of devices already
/// enrolled (`rotate`) are changed last; should one of those fail, the configs of the
/// devices whose password did change are still written, since their old ones no
/// longer work, and the error says so.
pub async fn apply_dynsec(
    rows: &[Row],
    target: &Target,
    dynsec: &crate::dynsec::Dynsec,
    reserved: &BTreeSet<String>,
    today: &str,
) -> Result<Enrolled, EnrollError> {
    target.check()?;
    let accounts = dynsec.accounts().await?;
    let mut reserved = reserved.clone();
    reserved.extend(accounts.others.iter().cloned());
    // A name both reserved and the broker's is told as reserved (the sort is stable).
    let mut errors = plan(rows, &accounts.devices, &reserved, target.rotate)
        .err()
        .unwrap_or_default();
    errors.extend(broker_names(rows));
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        errors.dedup_by_key(|e| e.line);
        return Err(EnrollError::Rows {
            file: "devices".into(),
            errors,
        });
    }
    let staging = staging_dir(target)?;
    let result = dynsec_commit(rows, target, dynsec, &accounts.devices, &staging, today).await;
    if result.is_err() && staging.exists() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

async fn dynsec_commit(
    rows: &[Row],
    target: &Target,
    dynsec: &crate::dynsec::Dynsec,
    enrolled: &BTreeSet<String>,
    staging: &Path,
    today: &str,
) -> Result<Enrolled, EnrollError> {
    let staged = stage(rows, target, staging, today)?;
    let (old, new): (Vec<_>, Vec<_>) = staged
        .into_iter()
        .partition(|(id, _)| enrolled.contains(id.as_str()));
    let undo = |new: &[(DeviceId, String)]| {
        let ids: Vec<DeviceId> = new.iter().map(|(id, _)| id.clone()).collect();
        async move {
            if let Err(e) = dynsec.delete_devices(&ids).await {
                tracing::error!(error = %e, "cannot delete the accounts this run created; \
                    delete them with `vigia-collector enrolment revoke ID`");
            }
        }
    };
    let created = match dynsec.create_devices(&new).await {
        Ok(r) => r,
        Err(e) => {
            undo(&new).await;
            return Err(e.into());
        }
    };
    let refused: Vec<String> = new
        .iter()
        .zip(&created)
        .filter_map(|((id, _), r)| r.as_ref().err().map(|e| format!("{id}: {e}")))
        .collect();
    if !refused.is_empty() {
        undo(&new).await;
        return Err(EnrollError::Setting(format!(
            "the broker refused {} account{} (nothing was created):\n  {}",
            refused.len(),
            if refused.len() == 1 { "" } else { "s" },
            refused.join("\n  ")
        )));
    }
    let rotated = dynsec.set_passwords(&old).await;
    let failed: Vec<(DeviceId, String)> = match &rotated {
        Ok(r) => old
            .iter()
            .zip(r)
            .filter_map(|((id, _), r)| r.as_ref().err().map(|e| (id.clone(), e.to_string())))
            .collect(),
        Err(e) => old
            .iter()
            .map(|(id, _)| (id.clone(), e.to_string()))
            .collect(),
    };
    if failed.is_empty() {
        publish(staging, target)?;
        return Ok(Enrolled {
            added: new.len(),
            rotated: old.len(),
            out: target.out.clone(),
        });
    }
    // The new accounts go; the passwords that did change keep their configs.
    undo(&new).await;
    let keep: Vec<&DeviceId> = old
        .iter()
        .map(|(id, _)| id)
        .filter(|id| !failed.iter().any(|(f, _)| f == *id))
        .collect();
    let dropped = new
        .iter()
        .map(|(id, _)| id)
        .chain(failed.iter().map(|(id, _)| id));
    for id in dropped {
        let _ = std::fs::remove_file(staging.join(format!("{id}.toml")));
    }
    let index = staging.join("index.csv");
    if let Ok(text) = std::fs::read_to_string(&index) {
        let kept: String = text
            .lines()
            .enumerate()
            .filter(|(i, l)| *i == 0 || keep.iter().any(|id| l.ends_with(&format!(",{id}.toml"))))
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        let _ = std::fs::write(&index, kept);
    }
    let written = if keep.is_empty() {
        String::new()
    } else {
        publish(staging, target)?;
        format!(
            "; {} device{} already given a new password keep it, with {} config{} in {}",
            keep.len(),
            if keep.len() == 1 { "" } else { "s" },
            if keep.len() == 1 { "its" } else { "their" },
            if keep.len() == 1 { "" } else { "s" },
            target.out.display()
        )
    };
    Err(EnrollError::Setting(format!(
        "the broker did not change {} password{} (no new account was kept{written}):\n  {}",
        failed.len(),
        if failed.len() == 1 { "" } else { "s" },
        failed
            .iter()
            .map(|(id, e)| format!("{id}: {e}"))
            .collect::<Vec<_>>()
            .join("\n  ")
    )))
}

/// Writes `text` to `new_passwd`, beside `passwd_file`, with the old file's owner and
/// mode 0640, and renames it over `passwd_file`: readers see the old file or the new one.
fn replace_passwd(passwd_file: &Path, new_passwd: &Path, text: &str) -> Result<(), EnrollError> {
    // 0640 from the start: Mosquitto reads the file after dropping root for its own
    // user, so its group must read it; nobody else ever may.
    write_private(new_passwd, text, 0o640)?;
    if let Ok(meta) = std::fs::metadata(passwd_file) {
        use std::os::unix::fs::MetadataExt;
        let _ = std::os::unix::fs::chown(new_passwd, Some(meta.uid()), Some(meta.gid()));
    } else if let Some(gid) = mosquitto_gid() {
        let _ = std::os::unix::fs::chown(new_passwd, None, Some(gid));
    }
    std::fs::set_permissions(new_passwd, std::fs::Permissions::from_mode(0o640))
        .map_err(io("cannot set the mode of", new_passwd))?;
    std::fs::rename(new_passwd, passwd_file).map_err(io("cannot replace", passwd_file))
}

/// The password file without the accounts of `ids`, and the ids it did not hold.
pub fn without_accounts(text: &str, ids: &BTreeSet<&str>) -> (String, Vec<String>) {
    let mut kept = String::new();
    let mut found = BTreeSet::new();
    for l in text.lines() {
        let user = l.split_once(':').map(|(u, _)| u.trim());
        if let Some(u) = user.filter(|u| ids.contains(u)) {
            found.insert(u.to_string());
            continue;
        }
        kept.push_str(l);
        kept.push('\n');
    }
    let missing = ids
        .iter()
        .filter(|id| !found.contains(**id))
        .map(|id| id.to_string())
        .collect();
    (kept, missing)
}

/// Removes the broker accounts of `ids` from `passwd_file`, all of them or none: an id
/// the file does not hold is refused (a typo must not pass for a revocation), as is a
/// reserved name. Mosquitto drops a revoked device's connection and refuses it from
/// its next reload. Returns how many accounts were removed.
pub fn revoke(
    passwd_file: &Path,
    ids: &[DeviceId],
    reserved: &BTreeSet<String>,
) -> Result<usize, EnrollError> {
    if let Some(r) = ids.iter().find(|id| reserved.contains(id.as_str())) {
        return Err(EnrollError::Setting(format!(
            "{r} is a reserved account (the collector's, or a user of the ACL), not a device"
        )));
    }
    let old = std::fs::read_to_string(passwd_file).map_err(io("cannot read", passwd_file))?;
    let set: BTreeSet<&str> = ids.iter().map(|id| id.as_str()).collect();
    let (text, missing) = without_accounts(&old, &set);
    if !missing.is_empty() {
        return Err(EnrollError::Setting(format!(
            "not enrolled in {} (nothing was revoked): {}",
            passwd_file.display(),
            missing.join(", ")
        )));
    }
    let new_passwd = passwd_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(format!(
            ".{}.revoke-{}",
            passwd_file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
    let result = replace_passwd(passwd_file, &new_passwd, &text);
    if result.is_err() {
        let _ = std::fs::remove_file(&new_passwd);
    }
    result.map(|()| set.len())
}

/// The gid of the `mosquitto` group, when it exists (read from /etc/group).
fn mosquitto_gid() -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some("mosquitto"))
            .then(|| f.nth(1).and_then(|g| g.parse().ok()))
            .flatten()
    })
}

/// A CSV cell: quoted when it holds a comma or a quote, and defused when a spreadsheet
/// would run it as a formula.
fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GOOD: &str = "id,hostname,site,tags,owner\n\
        ws-0001,ws-0001.example.org,bogota,desk;lab,jdoe\n\
        \"ws-0002\",WS-0002.example.org,,\"desk lab\",\"Doe, Jane\"\n";

    #[test]
    fn a_good_file_gives_one_row_per_device() {
        let rows = parse_csv(GOOD).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].tags, ["site-bogota", "desk", "lab"]);
        assert_eq!(rows[1].hostname, "ws-0002.example.org");
        assert_eq!(rows[1].owner, "Doe, Jane");
        assert_eq!(rows[1].tags, ["desk", "lab"]);
    }

    #[test]
    fn columns_in_any_order_and_only_id_required() {
        let rows = parse_csv("\u{feff}owner,id\r\njdoe,a1\r\n\r\n# a comment\r\n,b2\r\n").unwrap();
        assert_eq!(
            rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["a1", "b2"]
        );
        assert_eq!(rows[1].line, 5);
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let text = "id,hostname,site,tags,owner\n\
            ok-1,h1,,,\n\
            bad id,h2,,,\n\
            ok-3,h1,,,\n\
            ok-1,h4,,,\n\
            ok-5,-h5,,,\n\
            ok-6,h6,,\"x\"y,\n\
            ok-7,h7,,a;b;c;d;e;f;g;h;i,\n\
            ok-8,h8,,,,extra\n\
            .ok-9,h9,,,\n";
        let e = parse_csv(text).unwrap_err();
        let got: Vec<usize> = e.iter().map(|e| e.line).collect();
        assert_eq!(got, [3, 4, 5, 6, 7, 8, 9, 10], "{e:?}");
        assert!(e[1].message.contains("also on line 2"), "{}", e[1]);
        assert!(
            e[2].message.contains("id ok-1 is also on line 2"),
            "{}",
            e[2]
        );
    }

    #[test]
    fn a_header_without_id_or_with_unknown_columns_is_refused() {
        assert!(parse_csv("hostname\nh1\n").unwrap_err()[0]
            .message
            .contains("no id column"));
        let e = parse_csv("id,serial\na,b\n").unwrap_err();
        assert!(e[0].message.contains("unknown column \"serial\""), "{e:?}");
        assert!(parse_csv("").is_err());
        assert!(parse_csv("id\n").unwrap_err()[0]
            .message
            .contains("no devices"));
    }

    #[test]
    fn reserved_and_enrolled_ids_are_refused_unless_rotating_the_enrolled() {
        let rows = parse_csv("id\nvigia-collector\nws-1\nws-2\n").unwrap();
        let enrolled: BTreeSet<String> = ["ws-1".to_string()].into();
        let reserved: BTreeSet<String> = ["vigia-collector".to_string()].into();
        let e = plan(&rows, &enrolled, &reserved, false).unwrap_err();
        assert_eq!(e.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 3]);
        let e = plan(&rows, &enrolled, &reserved, true).unwrap_err();
        assert_eq!(
            e.iter().map(|e| e.line).collect::<Vec<_>>(),
            [2],
            "rotation never frees a reserved name"
        );
        assert!(plan(&rows[1..], &enrolled, &reserved, true).is_ok());
    }

    #[test]
    fn the_acl_names_its_users_and_the_passwd_file_its_accounts() {
        let acl =
            "pattern write vigia/v1/up/%u/#\nuser vigia-collector\ntopic read x\n  user  ops \n";
        assert_eq!(
            acl_users(acl),
            ["ops".to_string(), "vigia-collector".to_string()].into()
        );
        let pw = "a:$7$x\n\nb:$7$y\n";
        assert_eq!(
            passwd_accounts(pw),
            ["a".to_string(), "b".to_string()].into()
        );
    }

    #[test]
    fn the_config_is_toml_the_agent_would_read() {
        let rows = parse_csv(GOOD).unwrap();
        let t = Target {
            broker_url: "mqtts://broker.example.org:8883".into(),
            ca_file: Some("/etc/vigia/ca.crt".into()),
            out: "/nonexistent".into(),
            rotate: false,
        };
        let text = agent_config(&rows[1], &t, "pw\"x", "2026-12-02");
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["device"]["id"].as_str(), Some("ws-0002"));
        assert_eq!(v["mqtt"]["username"].as_str(), Some("ws-0002"));
        assert_eq!(v["mqtt"]["password"].as_str(), Some("pw\"x"));
        assert_eq!(v["device"]["tags"].as_array().map(Vec::len), Some(2));
        assert!(text.starts_with(
            "# Vigía agent config for ws-0002 (host ws-0002.example.org, owner Doe, Jane)"
        ));
    }

    #[test]
    fn revoking_keeps_every_other_account_and_names_the_unknown() {
        let text = "vigia-collector:$7$a\nws-1:$7$b\nws-2:$7$c\n";
        let (kept, missing) = without_accounts(text, &["ws-1"].into_iter().collect());
        assert_eq!(kept, "vigia-collector:$7$a\nws-2:$7$c\n");
        assert!(missing.is_empty());
        let (_, missing) = without_accounts(text, &["ws-2", "ws-9"].into_iter().collect());
        assert_eq!(missing, ["ws-9"]);
    }

    #[test]
    fn index_cells_are_quoted_and_defused() {
        assert_eq!(csv_cell("Doe, Jane"), "\"Doe, Jane\"");
        assert_eq!(csv_cell("=cmd()"), "'=cmd()");
        assert_eq!(csv_cell("plain"), "plain");
    }
}
