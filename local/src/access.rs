//! `conveyor token` and `conveyor keys`: credentials from the command line. A token is signed
//! with the configured `CONVEYOR_JWT_SECRET`; keys are written straight into the backend's store
//! (the embedded one only while no runtime holds the data directory; the API's
//! `/v1/api-keys` does the same while one runs).

use anyhow::{bail, Context};
use shared::config::Config;
use shared::domain::{parse_roles, ApiKey, Role, Tenant};
use std::time::Duration;

/// The flags of a subcommand: `--name value` pairs (a flag may repeat) and bare words.
struct Flags {
    pairs: Vec<(String, String)>,
    words: Vec<String>,
}

impl Flags {
    fn parse(args: &[String], known: &[&str]) -> anyhow::Result<Self> {
        let (mut pairs, mut words) = (vec![], vec![]);
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.strip_prefix("--") {
                Some(name) if known.contains(&name) => {
                    let value = it
                        .next()
                        .with_context(|| format!("--{name} needs a value"))?;
                    pairs.push((name.to_string(), value.clone()));
                }
                Some(name) => bail!(
                    "unknown flag --{name}; this command takes: --{}",
                    known.join(", --")
                ),
                None => words.push(arg.clone()),
            }
        }
        Ok(Self { pairs, words })
    }

    fn one(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .collect()
    }

    fn tenant(&self) -> anyhow::Result<Tenant> {
        let raw = self.one("tenant").context("--tenant is required")?;
        Tenant::parse(raw).map_err(|e| anyhow::anyhow!("--tenant: {}", e.message))
    }

    fn roles(&self) -> anyhow::Result<Vec<Role>> {
        parse_roles(self.all("role")).map_err(|e| anyhow::anyhow!("--role: {e}"))
    }

    fn duration(&self, name: &str) -> anyhow::Result<Option<Duration>> {
        self.one(name)
            .map(|v| {
                shared::config::parse_duration(v)
                    .filter(|d| !d.is_zero())
                    .with_context(|| format!("--{name} {v:?}: expected e.g. 30m, 12h or 90d"))
            })
            .transpose()
    }
}

/// `conveyor token --tenant T --role R [--role R2] [--sub NAME] [--ttl 1h]`: print an HS256 JWT.
pub fn token(config: &Config, args: &[String]) -> anyhow::Result<()> {
    let flags = Flags::parse(args, &["tenant", "role", "sub", "ttl"])?;
    let Some(secret) = &config.jwt_secret else {
        bail!("CONVEYOR_JWT_SECRET is not set: tokens are signed with it (the runtime must have the same)");
    };
    let tenant = flags.tenant()?;
    let roles = flags.roles()?;
    let ttl = flags.duration("ttl")?.unwrap_or(Duration::from_secs(3600));
    let sub = flags.one("sub").unwrap_or("cli");
    let token = shared::auth::issue_token(
        secret,
        &tenant,
        sub,
        &roles,
        ttl,
        config.jwt_issuer.as_deref(),
        config.jwt_audience.as_deref(),
        chrono::Utc::now(),
    )
    .map_err(anyhow::Error::msg)?;
    println!("{token}");
    Ok(())
}

/// `conveyor keys create|list|revoke`.
pub async fn keys(config: &Config, args: &[String]) -> anyhow::Result<()> {
    let Some((action, rest)) = args.split_first() else {
        bail!("conveyor keys create|list|revoke; see --help");
    };
    let (ports, _) = shared::adapters::open_ports(config)
        .await
        .with_context(|| {
            "opening the store (the embedded one cannot be opened while a runtime uses its data \
         directory: stop it, or call POST /v1/api-keys with an admin credential)"
        })?;
    let keys = &ports.keys;
    let now = chrono::Utc::now();
    match action.as_str() {
        "create" => {
            let flags = Flags::parse(rest, &["tenant", "role", "name", "expires-in"])?;
            let expires_at = flags
                .duration("expires-in")?
                .map(|d| now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
            let (key, token) = ApiKey::generate(
                flags.tenant()?,
                flags.roles()?,
                flags.one("name").unwrap_or("cli").to_string(),
                expires_at,
                now,
            );
            keys.put_key(&key).await?;
            eprintln!(
                "created key {} for tenant {} ({}); it is shown once, here:",
                key.id,
                key.tenant,
                key.roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!("{token}");
        }
        "list" => {
            let flags = Flags::parse(rest, &["tenant"])?;
            let tenant = flags.one("tenant").map(|_| flags.tenant()).transpose()?;
            for key in keys.list_keys(tenant.as_ref()).await? {
                println!("{}", key.view());
            }
        }
        "revoke" => {
            let flags = Flags::parse(rest, &[])?;
            let [id] = flags.words.as_slice() else {
                bail!("conveyor keys revoke KEY_ID");
            };
            match keys.revoke_key(id, now).await? {
                Some(key) => println!("{}", key.view()),
                None => bail!("no API key {id}"),
            }
        }
        other => bail!("conveyor keys {other}: expected create, list or revoke"),
    }
    Ok(())
}
