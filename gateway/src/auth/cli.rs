//! Subcommands that create credentials: `init`, `hash-password`, `new-token`, `keygen`.

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;
use ferrocam_protocol::control::Role;

/// `ferrocam-gateway init`: a first auth file, grant key pair, admin password and API token.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Directory to write `auth.toml`, `grant.key` and `grant.pub` into.
    #[arg(long, default_value = "/etc/ferrocam")]
    pub dir: PathBuf,
    /// The first user's name.
    #[arg(long, default_value = "admin")]
    pub user: String,
    /// The first user's password (random when not given; printed once).
    #[arg(long)]
    pub password: Option<String>,
    /// Replace existing files (which logs everyone out and needs grant.pub re-copied to devices).
    #[arg(long)]
    pub force: bool,
    /// The grant signing key to use (as the gateway's `--grant-signing-key`). When it exists it
    /// is kept and its public half written to `<dir>/grant.pub`; otherwise a new pair is made
    /// there. Default: `<dir>/grant.key`.
    #[arg(long, env = "FERROCAM_GRANT_SIGNING_KEY")]
    pub grant_key: Option<PathBuf>,
    /// Print the credentials as JSON (for scripts).
    #[arg(long)]
    pub json: bool,
}

/// `ferrocam-gateway new-token`: an API token and the `[[token]]` entry for the auth file.
#[derive(Debug, clap::Args)]
pub struct NewTokenArgs {
    /// A name for the token (shown in logs; delete the entry to revoke it).
    #[arg(long)]
    pub name: String,
    /// `view` or `control`.
    #[arg(long, default_value = "view", value_parser = crate::parse_role)]
    pub role: Role,
    /// Devices it may reach, comma-separated, or `*`.
    #[arg(long, default_value = "*")]
    pub devices: String,
}

/// `ferrocam-gateway keygen`: a new grant key pair.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the private key; the public key goes next to it as `.pub`.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing key pair (every device then needs the new `.pub`, and sessions
    /// signed with the old key are refused).
    #[arg(long)]
    pub force: bool,
}

/// Writes `contents` to a new file with `mode`, refusing to replace one unless `force`.
fn write_new(path: &Path, contents: &str, mode: u32, force: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(mode);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {} (use --force to replace it)", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

fn random_password() -> String {
    let mut buf = [0u8; 12];
    rand::fill(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

pub fn init(args: &InitArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let auth_path = args.dir.join("auth.toml");
    let key_path = args
        .grant_key
        .clone()
        .unwrap_or_else(|| args.dir.join("grant.key"));
    let pub_path = args.dir.join("grant.pub");
    let password = args.password.clone().unwrap_or_else(random_password);
    let (token, token_hash) = super::token::generate();
    let auth = format!(
        "# ferrocam gateway authentication. Reload with SIGHUP (systemctl reload ferrocam-gateway).\n\
         # Add users with `ferrocam-gateway hash-password`, tokens with `ferrocam-gateway new-token`.\n\
         session_ttl_secs = 3600\n\
         # Web origins other than the gateway's own that may call the API (CORS), e.g.\n\
         # [\"https://nvr.example.org\"]\n\
         allowed_origins = []\n\n\
         [[user]]\n\
         name = \"{}\"\n\
         password_hash = \"{}\"\n\
         role = \"control\"\n\
         devices = [\"*\"]\n\n\
         [[token]]\n\
         name = \"default\"\n\
         sha256 = \"{token_hash}\"\n\
         role = \"control\"\n\
         devices = [\"*\"]\n",
        args.user,
        super::password::hash(&password),
    );
    // Parse what we are about to write: a typo here would lock the user out.
    super::AuthConfig::parse(&auth).context("the generated auth file")?;
    write_new(&auth_path, &auth, 0o600, args.force)?;
    // An existing signing key (a packaged gateway makes one at install) stays: devices may
    // already hold its public half.
    let public = if key_path.exists() && !args.force {
        let instance = ferrocam_protocol::InstanceId::parse("init").expect("valid id");
        super::grant::GrantSigner::load(&key_path, instance)?
            .public_key()
            .to_owned()
    } else {
        let (private, public) = super::grant::generate();
        write_new(&key_path, &private, 0o600, args.force)?;
        public
    };
    write_new(&pub_path, &format!("{public}\n"), 0o644, true)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "user": args.user,
                "password": password,
                "token": token,
                "auth_config": auth_path,
                "grant_key": key_path,
                "grant_pub": pub_path,
            })
        );
    } else {
        println!(
            "wrote {}, {} and {}",
            auth_path.display(),
            key_path.display(),
            pub_path.display()
        );
        println!("log in as:  {} / {password}", args.user);
        println!("API token:  {token}");
        println!(
            "add devices with: ferrocam-gateway device add <id> --devices {}",
            args.dir.join("devices.toml").display()
        );
    }
    Ok(())
}

/// Reads a password from stdin (one line) and prints its argon2id hash.
pub fn hash_password() -> anyhow::Result<()> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("password: ");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!password.is_empty(), "empty password");
    println!("{}", super::password::hash(password));
    Ok(())
}

pub fn new_token(args: &NewTokenArgs) -> anyhow::Result<()> {
    let devices: Vec<String> = args
        .devices
        .split(',')
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .collect();
    let (token, hash) = super::token::generate();
    let role = match args.role {
        Role::View => "view",
        Role::Control => "control",
    };
    let entry = format!(
        "[[token]]\nname = {:?}\nsha256 = \"{hash}\"\nrole = \"{role}\"\ndevices = {:?}\n",
        args.name, devices
    );
    // Check the entry parses as part of an auth file before handing it out.
    super::AuthConfig::parse(&entry)?;
    println!("token (shown once): {token}\n\nadd to the auth file:\n\n{entry}");
    Ok(())
}

pub fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let (private, public) = super::grant::generate();
    let pub_path = args.out.with_extension("pub");
    // Check both before writing either: a private key without its public half is no use.
    if !args.force
        && let Some(existing) = [&args.out, &pub_path].into_iter().find(|p| p.exists())
    {
        anyhow::bail!(
            "{} exists (use --force to replace the key pair)",
            existing.display()
        );
    }
    write_new(&args.out, &private, 0o600, args.force)?;
    write_new(&pub_path, &format!("{public}\n"), 0o644, args.force)?;
    println!("{public}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ferrocam-keygen-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn keygen_refuses_to_replace_a_key_unless_forced() {
        let out = scratch().join("grant.key");
        let run = |force| {
            keygen(&KeygenArgs {
                out: out.clone(),
                force,
            })
        };
        run(false).unwrap();
        let first = std::fs::read_to_string(out.with_extension("pub")).unwrap();
        let refused = run(false).unwrap_err().to_string();
        assert!(refused.contains("--force"), "{refused}");
        // The hint is true: the flag exists and replaces both halves.
        run(true).unwrap();
        let second = std::fs::read_to_string(out.with_extension("pub")).unwrap();
        assert_ne!(first, second);
        let _ = std::fs::remove_dir_all(out.parent().unwrap());
    }

    #[test]
    fn every_subcommand_that_suggests_force_accepts_it() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: Cmd,
        }
        #[derive(clap::Subcommand)]
        enum Cmd {
            Init(InitArgs),
            Keygen(KeygenArgs),
        }
        assert!(Cli::try_parse_from(["x", "keygen", "--out", "k", "--force"]).is_ok());
        assert!(Cli::try_parse_from(["x", "init", "--force"]).is_ok());
    }
}
