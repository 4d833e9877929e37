//! The windows the user sees, drawn by the desktop's own dialog program (Zenity) rather
//! than a toolkit linked into the tray: the tray stays small, the windows look like the
//! rest of the desktop, and they are in the desktop's theme and accessibility stack.
//!
//! Arguments are built here (pure, tested) and handed to the program directly, never
//! through a shell. What zenity (3.44, Debian 12) does with `--text` depends on the
//! dialog, so each is given literal text its own way: messages get `--no-markup` and the
//! text as it is; the answer box reads C escapes and mnemonics (`_x`), escaped with
//! [`zenity_mnemonic`]; the form's own text reads markup and C escapes
//! ([`zenity_markup`]); long texts (the user's reports) go through `--text-info` on
//! standard input, shown as plain text. KDialog and yad are not driven yet.
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use vigia_protocol::Urgency;

use crate::text::{
    printable, say, urgency_labels, zenity_markup, zenity_mnemonic, Lang, Say, CATEGORIES,
};

/// Separates the form's fields in Zenity's answer: a character nobody types.
pub const SEPARATOR: char = '\u{1f}';

/// Why a dialog could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum DialogError {
    /// The program could not be started or waited for.
    #[error("cannot run {program}: {source}")]
    Run {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The program failed (not a cancel).
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The form's answer had not the fields asked for.
    #[error("the form answered {0} fields instead of 5")]
    Form(usize),
}

/// What the user typed in the report form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportForm {
    /// The category's wire value (`hardware`, `network`...).
    pub category: &'static str,
    /// One line.
    pub summary: String,
    /// Details.
    pub text: String,
    /// How urgent.
    pub urgency: Urgency,
    /// How to reach the user.
    pub contact: String,
}

/// Whether this session has a display a dialog can open on.
pub fn have_display(env: impl Fn(&str) -> Option<String>) -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| env(v).is_some_and(|s| !s.trim().is_empty()))
}

/// The first executable file named `name` in the directories of `path` (`$PATH`).
pub fn find_program(name: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path).map(|d| d.join(name)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The dialogs, drawn by Zenity.
#[derive(Debug, Clone)]
pub struct Dialogs {
    program: PathBuf,
    lang: Lang,
}

/// How a dialog ended.
enum Ended {
    /// OK, with what the program printed.
    Ok(String),
    /// Cancel, the window closed, or Escape.
    Cancelled,
}

impl Dialogs {
    /// Zenity from `$PATH`, when there is a display to show it on.
    pub fn find(lang: Lang) -> Option<Self> {
        if !have_display(|v| std::env::var(v).ok()) {
            return None;
        }
        let path = std::env::var("PATH").unwrap_or_default();
        find_program("zenity", &path).map(|program| Self { program, lang })
    }

    /// Zenity at `program`.
    pub fn with_program(program: &Path, lang: Lang) -> Self {
        Self {
            program: program.to_path_buf(),
            lang,
        }
    }

    /// The language of the windows.
    pub fn lang(&self) -> Lang {
        self.lang
    }

    async fn run(&self, args: Vec<String>, stdin: Option<String>) -> Result<Ended, DialogError> {
        match self.run_in(&args, stdin.clone(), None).await {
            // The session's locale is not installed (a LANG carried over ssh, a fresh
            // install): GTK falls back to "C", where zenity refuses every non-ASCII
            // argument. The same window in C.UTF-8: our texts stay in the user's
            // language, only GTK's own words fall back to English.
            Err(DialogError::Failed { stderr, .. }) if stderr.contains("Locale not supported") => {
                tracing::warn!("the session's locale is not installed; dialogs run in C.UTF-8");
                self.run_in(&args, stdin, Some("C.UTF-8")).await
            }
            other => other,
        }
    }

    async fn run_in(
        &self,
        args: &[String],
        stdin: Option<String>,
        locale: Option<&str>,
    ) -> Result<Ended, DialogError> {
        let name = self.program.display().to_string();
        let err = |source| DialogError::Run {
            program: name.clone(),
            source,
        };
        let mut cmd = tokio::process::Command::new(&self.program);
        if let Some(l) = locale {
            cmd.env("LC_ALL", l);
        }
        let mut child = cmd
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(err)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A window closed before reading everything is not an error.
            let _ = pipe.write_all(text.as_bytes()).await;
        }
        let out = child.wait_with_output().await.map_err(err)?;
        match out.status.code() {
            Some(0) => Ok(Ended::Ok(String::from_utf8_lossy(&out.stdout).into_owned())),
            // 1: Cancel or the window closed; 5: --timeout.
            Some(1 | 5) => Ok(Ended::Cancelled),
            _ => Err(DialogError::Failed {
                program: name,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            }),
        }
    }

    /// The report form; `None` when the user cancels.
    pub async fn report_form(&self) -> Result<Option<ReportForm>, DialogError> {
        match self.run(form_args(self.lang), None).await? {
            Ended::Ok(out) => parse_form(self.lang, &out).map(Some),
            Ended::Cancelled => Ok(None),
        }
    }

    /// A message; `title` and `text` may hold anything (they are escaped).
    pub async fn info(&self, title: &str, text: &str) -> Result<(), DialogError> {
        self.run(message_args(self.lang, "--info", title, text), None)
            .await
            .map(drop)
    }

    /// An error message.
    pub async fn error(&self, title: &str, text: &str) -> Result<(), DialogError> {
        self.run(message_args(self.lang, "--error", title, text), None)
            .await
            .map(drop)
    }

    /// A window showing `text` as plain text (no markup is read in it).
    pub async fn text_view(&self, title: &str, text: &str) -> Result<(), DialogError> {
        let args = vec![
            "--text-info".into(),
            format!("--title={title}"),
            "--width=560".into(),
            "--height=360".into(),
            format!("--ok-label={}", say(self.lang, Say::Ok)),
            format!("--cancel-label={}", say(self.lang, Say::Close)),
        ];
        self.run(args, Some(text.to_owned())).await.map(drop)
    }

    /// Asks for one line; `None` when the user cancels.
    pub async fn entry(&self, title: &str, text: &str) -> Result<Option<String>, DialogError> {
        let args = vec![
            "--entry".into(),
            format!("--title={title}"),
            format!("--text={}", zenity_mnemonic(text)),
            "--width=480".into(),
            format!("--ok-label={}", say(self.lang, Say::Send)),
            format!("--cancel-label={}", say(self.lang, Say::Cancel)),
        ];
        Ok(match self.run(args, None).await? {
            Ended::Ok(out) => Some(out.trim_end_matches('\n').to_owned()),
            Ended::Cancelled => None,
        })
    }
}

/// Zenity's arguments for the report form in `lang`.
pub fn form_args(lang: Lang) -> Vec<String> {
    let categories: Vec<&str> = CATEGORIES.iter().map(|c| c.label(lang)).collect();
    vec![
        "--forms".into(),
        format!("--title={}", say(lang, Say::FormTitle)),
        format!("--text={}", zenity_markup(say(lang, Say::FormIntro))),
        format!("--separator={SEPARATOR}"),
        "--width=520".into(),
        format!("--ok-label={}", say(lang, Say::Send)),
        format!("--cancel-label={}", say(lang, Say::Cancel)),
        format!("--add-combo={}", say(lang, Say::FieldCategory)),
        format!("--combo-values={}", categories.join("|")),
        format!("--add-entry={}", say(lang, Say::FieldSummary)),
        format!("--add-entry={}", say(lang, Say::FieldDescription)),
        format!("--add-combo={}", say(lang, Say::FieldUrgency)),
        format!("--combo-values={}", urgency_labels(lang).join("|")),
        format!("--add-entry={}", say(lang, Say::FieldContact)),
    ]
}

/// The fields of Zenity's answer to [`form_args`]. A combo left unchosen is the default:
/// hardware, medium.
pub fn parse_form(lang: Lang, out: &str) -> Result<ReportForm, DialogError> {
    let out = out.strip_suffix('\n').unwrap_or(out);
    let f: Vec<&str> = out.split(SEPARATOR).collect();
    let [category, summary, text, urgency, contact] = f[..] else {
        return Err(DialogError::Form(f.len()));
    };
    let category = CATEGORIES
        .iter()
        .find(|c| c.label(lang) == category.trim())
        .unwrap_or(&CATEGORIES[0])
        .value;
    let urgency = urgency_labels(lang)
        .iter()
        .position(|l| *l == urgency.trim())
        .and_then(|i| Urgency::ALL.get(i).copied())
        .unwrap_or(Urgency::Medium);
    Ok(ReportForm {
        category,
        summary: summary.trim().to_owned(),
        text: text.trim().to_owned(),
        urgency,
        contact: contact.trim().to_owned(),
    })
}

/// `--info` or `--error` showing `text` as it is (`--no-markup` also turns C escapes off).
fn message_args(lang: Lang, kind: &str, title: &str, text: &str) -> Vec<String> {
    vec![
        kind.into(),
        format!("--title={}", printable(title).replace('\n', " ")),
        "--no-markup".into(),
        format!("--text={}", printable(text)),
        "--width=420".into(),
        format!("--ok-label={}", say(lang, Say::Ok)),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_form_answer_maps_labels_back_to_wire_values() {
        let out = format!(
            "Impresora{s}No imprime{s}Sale en blanco | a medias{s}Alta{s}ext 12\n",
            s = SEPARATOR
        );
        let f = parse_form(Lang::Es, &out).unwrap();
        assert_eq!(f.category, "printer");
        assert_eq!(f.summary, "No imprime");
        assert_eq!(f.text, "Sale en blanco | a medias");
        assert_eq!(f.urgency, Urgency::High);
        assert_eq!(f.contact, "ext 12");
        let unchosen = format!("{s}x{s}{s}{s}\n", s = SEPARATOR);
        let f = parse_form(Lang::En, &unchosen).unwrap();
        assert_eq!((f.category, f.urgency), ("hardware", Urgency::Medium));
        assert!(matches!(
            parse_form(Lang::En, "a|b"),
            Err(DialogError::Form(1))
        ));
    }

    #[test]
    fn every_argument_is_one_word_with_its_value_attached() {
        // `--text=VALUE` in one argument: a value starting with "--" stays a value.
        let a = message_args(Lang::En, "--info", "Vigía: incident 3", "--help <b>");
        assert_eq!(a[2..4], ["--no-markup", "--text=--help <b>"]);
        for lang in [Lang::En, Lang::Es] {
            let f = form_args(lang);
            assert_eq!(f.iter().filter(|a| a.starts_with("--add-")).count(), 5);
            assert!(f.iter().all(|a| a.starts_with("--")), "{f:?}");
        }
    }

    #[test]
    fn a_display_and_a_program_are_found() {
        assert!(!have_display(|_| None));
        assert!(!have_display(|_| Some(" ".into())));
        assert!(have_display(
            |v| (v == "WAYLAND_DISPLAY").then(|| "wayland-0".into())
        ));
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("zenity");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        let path = format!("/nonexistent:{}", dir.path().display());
        assert_eq!(find_program("zenity", &path), None, "not executable");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_program("zenity", &path), Some(prog));
    }
}
