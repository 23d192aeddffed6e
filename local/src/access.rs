//! `conveyor token` and `conveyor keys`: credentials from the command line. A token is signed
//! with the configured `CONVEYOR_JWT_SECRET`; keys are written straight into the backend's store
//! (the embedded one only while no runtime holds the data directory; the API's
//! `/v1/api-keys` does the same while one runs).

use anyhow::{bail, Context};
use shared::config::Config;
use shared::domain::{parse_roles, ApiKey, Role, Tenant};
use std::time::Duration;

/// `--tenant`: a tenant name as the API takes it.
pub fn parse_tenant(raw: &str) -> Result<Tenant, String> {
    Tenant::parse(raw).map_err(|e| e.message)
}

/// `--role`: a role name (operator, admin, submitter or reader).
fn parse_role(raw: &str) -> Result<Role, String> {
    parse_roles([raw]).map(|roles| roles[0])
}

/// A duration such as `30m`, `12h` or `90d`, not zero.
fn parse_ttl(raw: &str) -> Result<Duration, String> {
    shared::config::parse_duration(raw)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{raw:?}: expected e.g. 30m, 12h or 90d"))
}

/// Roles, each once, highest first.
fn roles_of(roles: &[Role]) -> Vec<Role> {
    parse_roles(roles.iter().map(|r| r.as_str())).expect("parsed roles")
}

/// `conveyor token`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// The tenant the token acts for
    #[arg(long, value_parser = parse_tenant)]
    pub tenant: Tenant,
    /// A role the token carries: operator, admin, submitter or reader (repeat, or R1,R2)
    #[arg(long = "role", value_name = "ROLE", required = true, value_delimiter = ',', value_parser = parse_role)]
    pub roles: Vec<Role>,
    /// The token's subject (who it names in the audit trail)
    #[arg(long, value_name = "NAME", default_value = "cli")]
    pub sub: String,
    /// How long the token is valid, e.g. 30m, 12h
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,
}

/// `conveyor keys …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print it (shown once)
    Create {
        /// The tenant the key acts for
        #[arg(long, value_parser = parse_tenant)]
        tenant: Tenant,
        /// A role the key carries: operator, admin, submitter or reader (repeat, or R1,R2)
        #[arg(long = "role", value_name = "ROLE", required = true, value_delimiter = ',', value_parser = parse_role)]
        roles: Vec<Role>,
        /// The key's name, shown in lists
        #[arg(long, value_name = "NAME", default_value = "cli")]
        name: String,
        /// The key stops working after this long, e.g. 90d [default: never]
        #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
        expires_in: Option<Duration>,
    },
    /// List the keys (one JSON object a line), of one tenant or every one
    List {
        /// Only this tenant's keys
        #[arg(long, value_parser = parse_tenant)]
        tenant: Option<Tenant>,
    },
    /// Revoke a key: it stops working at once
    Revoke {
        /// The key's id (the 26 characters after `cvk_`)
        key_id: String,
    },
}

/// `conveyor token --tenant T --role R [--role R2] [--sub NAME] [--ttl 1h]`: print an HS256 JWT.
pub fn token(config: &Config, args: &TokenArgs) -> anyhow::Result<()> {
    let Some(secret) = &config.jwt_secret else {
        bail!("CONVEYOR_JWT_SECRET is not set: tokens are signed with it (the runtime must have the same)");
    };
    let token = shared::auth::issue_token(
        secret,
        &args.tenant,
        &args.sub,
        &roles_of(&args.roles),
        args.ttl,
        config.jwt_issuer.as_deref(),
        config.jwt_audience.as_deref(),
        chrono::Utc::now(),
    )
    .map_err(anyhow::Error::msg)?;
    println!("{token}");
    Ok(())
}

/// `conveyor keys create|list|revoke`.
pub async fn keys(config: &Config, command: &KeysCommand) -> anyhow::Result<()> {
    let (ports, _) = shared::adapters::open_ports(config)
        .await
        .with_context(|| {
            "opening the store (the embedded one cannot be opened while a runtime uses its data \
         directory: stop it, or call POST /v1/api-keys with an admin credential)"
        })?;
    let keys = &ports.keys;
    let now = chrono::Utc::now();
    match command {
        KeysCommand::Create {
            tenant,
            roles,
            name,
            expires_in,
        } => {
            let expires_at = expires_in
                .map(|d| now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
            let (key, token) = ApiKey::generate(
                tenant.clone(),
                roles_of(roles),
                name.clone(),
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
        KeysCommand::List { tenant } => {
            for key in keys.list_keys(tenant.as_ref()).await? {
                println!("{}", key.view());
            }
        }
        KeysCommand::Revoke { key_id } => match keys.revoke_key(key_id, now).await? {
            Some(key) => println!("{}", key.view()),
            None => bail!("no API key {key_id}"),
        },
    }
    Ok(())
}
