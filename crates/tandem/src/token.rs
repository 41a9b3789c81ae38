//! `tandem token create|list|revoke`: the tokens of the distributors' HTTP and WebSocket API,
//! kept hashed in the topology's tokens file (`tandem_distributor::auth`).

use anyhow::Result;
use std::path::PathBuf;
use tandem_distributor::auth::{self, TokenRole};
use tandem_model::topology::Topology;

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Creates a token and prints it: the only time it is shown.
    Create {
        #[arg(long)]
        config: PathBuf,
        /// viewer (reads real-time data and the configuration) or admin (also changes the
        /// configuration).
        #[arg(long, value_parser = parse_role)]
        role: TokenRole,
        /// Who holds it; recorded with every configuration change made with it.
        #[arg(long)]
        name: String,
    },
    /// Lists the tokens (ids, holders, roles; never the tokens themselves).
    List {
        #[arg(long)]
        config: PathBuf,
    },
    /// Revokes a token by its id; every distributor refuses it within a second.
    Revoke {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        id: String,
    },
}

fn parse_role(text: &str) -> Result<TokenRole, String> {
    TokenRole::parse(text).ok_or_else(|| format!("a token's role is viewer or admin, not {text:?}"))
}

pub fn token_command(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create { config, role, name } => {
            let topology = Topology::load(&config)?;
            let (entry, token) = auth::create(&topology.tokens_file(), role, &name)?;
            eprintln!(
                "created {} token {} for {:?} in {}",
                entry.role.as_str(),
                entry.id,
                entry.name,
                topology.tokens_file().display()
            );
            println!("{token}");
        }
        TokenCommand::List { config } => {
            let topology = Topology::load(&config)?;
            for entry in auth::list(&topology.tokens_file())? {
                println!(
                    "{}  {:<6}  {}  created {}",
                    entry.id,
                    entry.role.as_str(),
                    entry.name,
                    entry.created_unix_ms
                );
            }
        }
        TokenCommand::Revoke { config, id } => {
            let topology = Topology::load(&config)?;
            let entry = auth::revoke(&topology.tokens_file(), &id)?;
            println!(
                "revoked {} token {} of {:?}",
                entry.role.as_str(),
                entry.id,
                entry.name
            );
        }
    }
    Ok(())
}
