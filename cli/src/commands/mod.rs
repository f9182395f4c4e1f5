//! One module per command group; [`run`] dispatches.

mod admin;
mod bundles;
mod keys;
mod lifecycle;
mod man;
mod pack;
mod pull;
mod push;
mod registries;
mod search;
mod serve;
mod tag;
mod uploads;

use clap::CommandFactory;

use crate::{
    cli::{Cli, Command, RegistryCommand, ServiceCommand},
    client_config::ClientConfig,
    context::Context,
    registry_client::RegistryClient,
};

/// Runs one command; returns the process exit code on success.
pub async fn run(cli: Cli, ctx: Context) -> anyhow::Result<u8> {
    if let Command::Service(ServiceCommand::Run { name }) = &cli.command {
        let code = lifecycle::service_run(&ctx, name).await?;
        return Ok(u8::try_from(code).unwrap_or(1));
    }
    run_command(cli, ctx).await.map(|()| 0)
}

async fn run_command(cli: Cli, ctx: Context) -> anyhow::Result<()> {
    let client = || -> anyhow::Result<RegistryClient> {
        let config = ClientConfig::load(&ctx.config_path)?;
        let target = config.target(ctx.registry.as_deref(), ctx.env_key.as_deref())?;
        Ok(RegistryClient::new(target))
    };
    match cli.command {
        Command::Login {
            url,
            key,
            name,
            default,
        } => registries::login(&ctx, &url, &key, name.as_deref(), default).await,
        Command::Pack {
            dir,
            self_package,
            output,
        } => match dir {
            Some(dir) if !self_package => pack::run(&ctx, &dir, output),
            _ => pack::pack_self(&ctx, output),
        },
        Command::Install { reference } => lifecycle::install(&ctx, &client()?, &reference).await,
        Command::Activate { reference, system } => {
            lifecycle::activate(&ctx, &client()?, &reference, system).await
        }
        Command::Deactivate { name } => lifecycle::deactivate(&ctx, &name),
        Command::Rollback { name } => lifecycle::rollback(&ctx, &name),
        Command::Upgrade { reference, system } => {
            lifecycle::upgrade(&ctx, &client()?, reference.as_deref(), system).await
        }
        Command::List => lifecycle::list(&ctx),
        Command::Remove { reference, force } => lifecycle::remove(&ctx, &reference, force),
        Command::Service(ServiceCommand::Run { .. }) => unreachable!("handled in `run`"),
        Command::Push { file } => push::run(&ctx, &client()?, &file).await,
        Command::Pull {
            reference,
            arch,
            output,
            nearest,
        } => {
            let config = ClientConfig::load(&ctx.config_path)?;
            let group = ctx
                .registry
                .as_deref()
                .and_then(|r| config.group(r, ctx.env_key.as_deref()));
            let candidates = match (group, nearest) {
                (Some(members), _) => Some(members?),
                (None, true) => Some(config.all_targets(ctx.env_key.as_deref())?),
                (None, false) => None,
            };
            match candidates {
                Some(targets) => {
                    pull::run_nearest(&ctx, targets, &reference, arch.as_deref(), output).await
                }
                None => pull::run(&ctx, &client()?, &reference, arch.as_deref(), output).await,
            }
        }
        Command::Search { query, limit } => search::run(&ctx, &client()?, &query, limit).await,
        Command::Show { name } => search::show(&ctx, &client()?, &name).await,
        Command::Tag { source, target } => tag::tag(&ctx, &client()?, &source, &target).await,
        Command::Untag { reference } => tag::untag(&ctx, &client()?, &reference).await,
        Command::Delete { reference, arch } => {
            tag::delete(&ctx, &client()?, &reference, arch.as_deref()).await
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "niso", &mut script);
            crate::output::write_bytes(&script);
            Ok(())
        }
        Command::Man { dir: None } => man::print(),
        Command::Man { dir: Some(dir) } => man::write_dir(&ctx, &dir),
        Command::Registry(cmd) => match cmd {
            RegistryCommand::Serve(args) => serve::run(&ctx, &args).await,
            RegistryCommand::Info {
                data_dir: Some(dir),
            } => admin::info_offline(&ctx, &dir),
            RegistryCommand::Info { data_dir: None } => admin::info(&ctx, &client()?).await,
            RegistryCommand::Peers => admin::peers(&ctx, &client()?).await,
            RegistryCommand::Add {
                name,
                url,
                key,
                default,
            } => registries::add(&ctx, &name, &url, key, default),
            RegistryCommand::Default { name } => registries::default(&ctx, name.as_deref()),
            RegistryCommand::List => registries::list(&ctx),
            RegistryCommand::Remove { name } => registries::remove(&ctx, &name),
            RegistryCommand::ListTags { name } => tag::list(&ctx, &client()?, &name).await,
            RegistryCommand::CreateKey {
                scopes,
                name,
                expires,
            } => keys::create(&ctx, &client()?, &scopes, &name, expires.as_deref()).await,
            RegistryCommand::ListKeys => keys::list(&ctx, &client()?).await,
            RegistryCommand::RevokeKey { id } => keys::revoke(&ctx, &client()?, &id).await,
            RegistryCommand::Uploads { cancel } => match cancel {
                Some(id) => uploads::cancel(&ctx, &client()?, &id).await,
                None => uploads::list(&ctx, &client()?).await,
            },
            RegistryCommand::Gc {
                keep_versions,
                dry_run,
            } => admin::gc(&ctx, &client()?, keep_versions, dry_run).await,
            RegistryCommand::Mirror { from, to } => admin::mirror(&ctx, &from, &to).await,
            RegistryCommand::Export {
                to,
                packages,
                since,
            } => bundles::export(&ctx, &client()?, &to, &packages, since).await,
            RegistryCommand::Import { file } => bundles::import(&ctx, &client()?, &file).await,
        },
    }
}
