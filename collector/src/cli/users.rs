//! The account and token commands, and where the client commands keep their token.
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use super::client::ApiClient;
use super::{TokenCmd, UserCmd};
use crate::auth::AccountRole;
use crate::config::Config;

/// The environment variable holding an API token; it wins over any file.
pub(super) const TOKEN_ENV: &str = "VIGIA_TOKEN";

/// The token file: `[cli] token_file`, else `$XDG_CONFIG_HOME/vigia/collector-token`,
/// else `~/.config/vigia/collector-token`.
pub(super) fn token_file(cfg: &Config) -> anyhow::Result<PathBuf> {
    if let Some(f) = &cfg.cli.token_file {
        return Ok(f.clone());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })
        .ok_or_else(|| anyhow!("neither XDG_CONFIG_HOME nor HOME is set: set [cli] token_file"))?;
    Ok(base.join("vigia").join("collector-token"))
}

/// The token the client commands send, if any.
pub(super) fn read_token(cfg: &Config) -> anyhow::Result<Option<String>> {
    if let Some(t) = std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        return Ok(Some(t.trim().to_owned()));
    }
    let file = token_file(cfg)?;
    match std::fs::read_to_string(&file) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!(
            "cannot read the token file {}: {e}",
            file.display()
        )),
    }
}

/// Keeps `token` in `file`, readable by its owner only.
pub(super) fn write_token(file: &std::path::Path, token: &str) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(file)
        .with_context(|| format!("cannot write {}", file.display()))?;
    writeln!(f, "{token}").with_context(|| format!("cannot write {}", file.display()))?;
    Ok(())
}

/// A password from standard input (one line), prompting when it is a terminal (the
/// input is then echoed: pipe it, or use the console, where it is not).
pub(super) fn read_password(from_stdin: bool, prompt: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !from_stdin && stdin.is_terminal() {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password")?;
    let p = line.trim_end_matches(['\n', '\r']).to_owned();
    if p.is_empty() {
        bail!("no password given");
    }
    Ok(p)
}

/// The password from standard input, or empty: the server then makes one up.
fn given_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        read_password(true, "")
    } else {
        Ok(String::new())
    }
}

fn roles(names: &[String]) -> anyhow::Result<Vec<AccountRole>> {
    names
        .iter()
        .flat_map(|n| n.split(','))
        .map(|n| n.parse::<AccountRole>().map_err(|e| anyhow!(e)))
        .collect()
}

/// `--clearance`'s value: a level's name (English or Spanish), or `default` (null).
fn clearance_value(s: &str) -> anyhow::Result<Value> {
    if s.trim() == "default" {
        return Ok(Value::Null);
    }
    let level: crate::workflow::Secrecy = s
        .parse()
        .map_err(|e| anyhow!("--clearance: {e}, or default"))?;
    Ok(json!(level))
}

fn print_account(v: &Value) {
    let list = |k: &str| {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    super::render::out(&format!(
        "{:<16} {:<28} {:<6} {:<24} {:<10} {:<28} {}\n",
        v["login"].as_str().unwrap_or("?"),
        list("roles"),
        v["level"].as_u64().map_or("-".into(), |l| l.to_string()),
        list("groups"),
        v["clearance"].as_str().unwrap_or("?"),
        v["email"].as_str().unwrap_or("-"),
        if v["disabled"].as_bool() == Some(true) {
            "disabled"
        } else {
            ""
        }
    ));
}

/// `user ...`.
pub(super) fn run(api: &ApiClient, cmd: &UserCmd) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Add {
            login,
            roles: r,
            level,
            groups,
            name,
            provider,
            email,
            clearance,
            password_stdin,
        } => {
            let password = given_password(*password_stdin)?;
            let mut body = json!({
                "login": login, "roles": roles(r)?, "level": level, "groups": groups,
                "name": name, "provider": provider, "email": email, "password": password,
            });
            if let Some(c) = clearance {
                body["clearance"] = clearance_value(c)?;
            }
            let v = api.post("/api/users", &body)?;
            println!("added {login}");
            if let Some(p) = v["password"].as_str() {
                println!("password (shown once): {p}");
            }
        }
        UserCmd::List { json } => {
            let v = api.get("/api/users")?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<16} {:<28} {:<6} {:<24} {:<10} {:<28}",
                    "LOGIN", "ROLES", "LEVEL", "GROUPS", "CLEARANCE", "EMAIL"
                );
                for a in v.as_array().into_iter().flatten() {
                    print_account(a);
                }
            }
        }
        UserCmd::Passwd {
            login,
            password_stdin,
        } => {
            let password = given_password(*password_stdin)?;
            let v = api.send(
                "PATCH",
                &format!("/api/users/{login}"),
                Some(&json!({ "password": password })),
            )?;
            println!("password of {login} changed; its sessions ended");
            if let Some(p) = v["password"].as_str() {
                println!("new password (shown once): {p}");
            }
        }
        UserCmd::Disable { login } | UserCmd::Enable { login } => {
            let disabled = matches!(cmd, UserCmd::Disable { .. });
            api.send(
                "PATCH",
                &format!("/api/users/{login}"),
                Some(&json!({ "disabled": disabled })),
            )?;
            println!("{login} {}", if disabled { "disabled" } else { "enabled" });
        }
        UserCmd::Set {
            login,
            roles: r,
            level,
            add_groups,
            remove_groups,
            name,
            email,
            clearance,
        } => {
            let mut body = json!({ "add_groups": add_groups, "remove_groups": remove_groups });
            if let Some(e) = email {
                body["email"] = json!(e);
            }
            if !r.is_empty() {
                body["roles"] = json!(roles(r)?);
            }
            if let Some(l) = level {
                body["level"] = json!(l);
            }
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(c) = clearance {
                body["clearance"] = clearance_value(c)?;
            }
            let v = api.send("PATCH", &format!("/api/users/{login}"), Some(&body))?;
            print_account(&v);
        }
    }
    Ok(())
}

/// `token ...`.
pub(super) fn tokens(api: &ApiClient, cmd: &TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create { name, scope } => {
            let v = api.post("/api/tokens", &json!({ "name": name, "scope": scope }))?;
            println!("id {}", v["id"].as_str().unwrap_or("?"));
            println!("token (shown once): {}", v["token"].as_str().unwrap_or("?"));
        }
        TokenCmd::List { all } => {
            let v = api.get(if *all {
                "/api/tokens?all=true"
            } else {
                "/api/tokens"
            })?;
            println!("{:<18} {:<16} {:<6} NAME", "ID", "LOGIN", "SCOPE");
            for t in v.as_array().into_iter().flatten() {
                super::render::out(&format!(
                    "{:<18} {:<16} {:<6} {}\n",
                    t["id"].as_str().unwrap_or("?"),
                    t["login"].as_str().unwrap_or("?"),
                    t["scope"].as_str().unwrap_or("?"),
                    t["name"].as_str().unwrap_or("")
                ));
            }
        }
        TokenCmd::Revoke { id } => {
            api.send("DELETE", &format!("/api/tokens/{id}"), None)?;
            println!("revoked {id}");
        }
    }
    Ok(())
}
