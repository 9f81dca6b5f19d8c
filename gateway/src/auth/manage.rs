//! `ferrocam-gateway user …` and `token …`: accounts and API tokens without editing TOML.
//!
//! Each command edits the auth file with `toml_edit`, so the operator's comments and layout
//! survive, checks that the result still loads, and replaces the file in one step with its
//! owner, group and mode kept (`crate::files`). A running gateway notices the change within a second (it also still
//! reloads on SIGHUP), so a removal or a revocation takes effect at once.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ferrocam_protocol::control::Role;
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, value};

/// Where the auth file is.
#[derive(Debug, clap::Args)]
pub struct AuthFile {
    /// The gateway's auth file.
    #[arg(
        long,
        env = "FERROCAM_AUTH_CONFIG",
        default_value = "/etc/ferrocam/auth.toml"
    )]
    pub auth_config: PathBuf,
}

/// Who gets what.
#[derive(Debug, clap::Args)]
pub struct Grants {
    /// `view` or `control`.
    #[arg(long, default_value = "view", value_parser = crate::parse_role)]
    pub role: Role,
    /// Devices it may reach, comma-separated, or `*`.
    #[arg(long, default_value = "*")]
    pub devices: String,
    /// May talk through cameras' speakers (`true`/`false`); left out, the role decides
    /// (`control` may, `view` may not).
    #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
    pub talk: Option<bool>,
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCmd {
    /// Adds a user. The password is read from stdin with --password-stdin, else made up and
    /// printed once.
    Add {
        name: String,
        #[command(flatten)]
        grants: Grants,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        file: AuthFile,
    },
    /// Lists users: name, role, devices.
    List {
        #[command(flatten)]
        file: AuthFile,
    },
    /// Removes a user; their sessions end at once.
    Remove {
        name: String,
        #[command(flatten)]
        file: AuthFile,
    },
    /// Sets a new password (stdin with --password-stdin, else made up and printed); every
    /// session made with the old one ends.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        file: AuthFile,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCmd {
    /// Makes an API token and prints it once (the file keeps only its SHA-256).
    Add {
        name: String,
        #[command(flatten)]
        grants: Grants,
        #[command(flatten)]
        file: AuthFile,
    },
    /// Lists tokens: name, role, devices.
    List {
        #[command(flatten)]
        file: AuthFile,
    },
    /// Revokes a token: requests carrying it are refused at once.
    Revoke {
        name: String,
        #[command(flatten)]
        file: AuthFile,
    },
}

pub fn user(cmd: &UserCmd) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Add {
            name,
            grants,
            password_stdin,
            file,
        } => {
            let password = password(*password_stdin)?;
            edit(&file.auth_config, |doc| {
                let users = entries(doc, "user")?;
                anyhow::ensure!(find(users, name).is_none(), "user {name} exists");
                let mut entry = Table::new();
                entry["name"] = value(name.as_str());
                entry["password_hash"] = value(super::password::hash(&password.text));
                set_grants(&mut entry, grants);
                users.push(entry);
                Ok(())
            })?;
            password.announce(name);
            println!("added user {name}");
        }
        UserCmd::List { file } => list(&file.auth_config, "user")?,
        UserCmd::Remove { name, file } => {
            edit(&file.auth_config, |doc| remove(entries(doc, "user")?, name))?;
            println!("removed user {name}; their sessions have ended");
        }
        UserCmd::Passwd {
            name,
            password_stdin,
            file,
        } => {
            let password = password(*password_stdin)?;
            edit(&file.auth_config, |doc| {
                let users = entries(doc, "user")?;
                let i = find(users, name).with_context(|| format!("no user {name}"))?;
                let entry = users.get_mut(i).expect("found above");
                entry["password_hash"] = value(super::password::hash(&password.text));
                Ok(())
            })?;
            password.announce(name);
            println!("new password set for {name}; their other sessions have ended");
        }
    }
    Ok(())
}

pub fn token(cmd: &TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Add { name, grants, file } => {
            let (token, digest) = super::token::generate();
            edit(&file.auth_config, |doc| {
                let tokens = entries(doc, "token")?;
                anyhow::ensure!(find(tokens, name).is_none(), "a token named {name} exists");
                let mut entry = Table::new();
                entry["name"] = value(name.as_str());
                entry["sha256"] = value(digest.as_str());
                set_grants(&mut entry, grants);
                tokens.push(entry);
                Ok(())
            })?;
            println!("{token}");
            eprintln!("token {name} added; it is shown only now");
        }
        TokenCmd::List { file } => list(&file.auth_config, "token")?,
        TokenCmd::Revoke { name, file } => {
            edit(&file.auth_config, |doc| {
                remove(entries(doc, "token")?, name)
            })?;
            println!("revoked token {name}");
        }
    }
    Ok(())
}

/// A password to set, and whether it was made up here (then it is printed once).
struct Password {
    text: String,
    made_up: bool,
}

impl Password {
    fn announce(&self, user: &str) {
        if self.made_up {
            println!("password for {user} (shown once): {}", self.text);
        }
    }
}

fn password(from_stdin: bool) -> anyhow::Result<Password> {
    if !from_stdin {
        let mut bytes = [0u8; 12];
        rand::fill(&mut bytes);
        use base64::Engine as _;
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        return Ok(Password {
            text,
            made_up: true,
        });
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let text = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(
        text.chars().count() >= 8,
        "use a password of 8 characters or more"
    );
    Ok(Password {
        text,
        made_up: false,
    })
}

fn set_grants(entry: &mut Table, grants: &Grants) {
    entry["role"] = value(match grants.role {
        Role::View => "view",
        Role::Control => "control",
    });
    let mut devices = Array::new();
    for device in grants
        .devices
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        devices.push(device);
    }
    entry["devices"] = value(devices);
    match grants.talk {
        Some(talk) => entry["talk"] = value(talk),
        None => {
            entry.remove("talk");
        }
    }
}

/// The `[[user]]` or `[[token]]` tables, made if the file has none yet.
fn entries<'a>(doc: &'a mut DocumentMut, kind: &str) -> anyhow::Result<&'a mut ArrayOfTables> {
    doc.entry(kind)
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .with_context(|| format!("`{kind}` in the auth file is not a list of [[{kind}]] tables"))
}

fn find(tables: &ArrayOfTables, name: &str) -> Option<usize> {
    tables
        .iter()
        .position(|t| t.get("name").and_then(Item::as_str) == Some(name))
}

/// Removes every entry called `name`.
fn remove(tables: &mut ArrayOfTables, name: &str) -> anyhow::Result<()> {
    let before = tables.len();
    tables.retain(|t| t.get("name").and_then(Item::as_str) != Some(name));
    anyhow::ensure!(tables.len() < before, "nothing called {name}");
    Ok(())
}

fn list(path: &Path, kind: &str) -> anyhow::Result<()> {
    let mut doc = read(path)?;
    for table in entries(&mut doc, kind)?.iter() {
        let field = |k: &str| {
            table
                .get(k)
                .map(|v| v.to_string().trim().trim_matches('"').to_owned())
                .unwrap_or_default()
        };
        let role = match field("role") {
            r if r.is_empty() => "view".to_owned(),
            r => r,
        };
        let talk = match field("talk") {
            t if t.is_empty() => if role == "control" { "talk" } else { "no talk" }.to_owned(),
            t if t == "true" => "talk".to_owned(),
            _ => "no talk".to_owned(),
        };
        println!("{}\t{role}\t{}\t{talk}", field("name"), field("devices"));
    }
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<DocumentMut> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))
}

/// Applies `change` to the file, checks the result loads as an auth file, and swaps it in.
fn edit(
    path: &Path,
    change: impl FnOnce(&mut DocumentMut) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut doc = read(path)?;
    change(&mut doc)?;
    let text = doc.to_string();
    super::AuthConfig::parse(&text).context("the edited auth file would not load")?;
    crate::files::replace(path, &text, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ferrocam-manage-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("auth.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn grants(role: Role, devices: &str) -> Grants {
        Grants {
            role,
            devices: devices.into(),
            talk: None,
        }
    }

    #[test]
    fn users_and_tokens_come_and_go_and_comments_stay() {
        let path = file("# my gateway\nsession_ttl_secs = 600 # ten minutes\n");
        let auth = |p: &Path| super::super::AuthConfig::load(p).unwrap();
        edit(&path, |doc| {
            let users = entries(doc, "user")?;
            let mut entry = Table::new();
            entry["name"] = value("alice");
            entry["password_hash"] = value(super::super::password::hash("wonderland"));
            set_grants(&mut entry, &grants(Role::Control, "porch, garage"));
            users.push(entry);
            Ok(())
        })
        .unwrap();
        let (token, digest) = super::super::token::generate();
        edit(&path, |doc| {
            let mut entry = Table::new();
            entry["name"] = value("nvr");
            entry["sha256"] = value(digest.as_str());
            let intercom = Grants {
                talk: Some(true),
                ..grants(Role::View, "*")
            };
            set_grants(&mut entry, &intercom);
            entries(doc, "token")?.push(entry);
            Ok(())
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("# my gateway") && text.contains("# ten minutes"),
            "{text}"
        );
        let loaded = auth(&path);
        assert_eq!(loaded.users["alice"].0.role, Role::Control);
        // Talking as the role implies for alice, as set for the view token.
        assert!(loaded.users["alice"].0.talk);
        assert!(text.contains("talk = true"), "{text}");
        assert!(loaded.tokens.values().all(|t| t.talk));
        assert!(
            loaded
                .tokens
                .contains_key(&super::super::token::sha256_hex(&token))
        );

        // A second user of the same name is refused; a removal takes the entry away.
        let again = edit(&path, |doc| {
            anyhow::ensure!(find(entries(doc, "user")?, "alice").is_none(), "exists");
            Ok(())
        });
        assert!(again.is_err());
        edit(&path, |doc| remove(entries(doc, "token")?, "nvr")).unwrap();
        assert!(auth(&path).tokens.is_empty());
        assert!(edit(&path, |doc| remove(entries(doc, "token")?, "nvr")).is_err());
    }

    #[test]
    fn an_edit_that_would_not_load_leaves_the_file_alone() {
        let path = file("session_ttl_secs = 600\n");
        let before = std::fs::read_to_string(&path).unwrap();
        let broken = edit(&path, |doc| {
            let mut entry = Table::new();
            entry["name"] = value("eve");
            entry["password_hash"] = value("not a hash");
            entry["devices"] = value(Array::new());
            entries(doc, "user")?.push(entry);
            Ok(())
        });
        assert!(broken.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    }
}
