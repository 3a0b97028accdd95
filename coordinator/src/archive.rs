//! The commands that read the archive back or guard it: `restore`, `validate`, `hold`.
//!
//! Each resolves its table from the configuration, calls the engine (`archive::restore`,
//! `archive::validate`, the checkpoint store's holds) and prints what it did; the exit status is
//! 0 only when everything asked for was done.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use archiver_engine::archive::catalog::Range;
use archiver_engine::archive::restore::{self, Damage, Plan, Request};
use archiver_engine::archive::validate::{self, TableRef};
use archiver_engine::checkpoint::holds::{self, Hold, NewHold};
use archiver_engine::checkpoint::CheckpointStore;
use archiver_engine::config::{Config, TableSettings};
use archiver_engine::setup::{self, Scope};

use crate::cli::{HoldCommand, RestoreArgs};
use crate::progress;
use crate::render::count;

/// The one configured table `database`/`table` names.
fn one_table(config: &Config, database: &str, table: &str) -> anyhow::Result<TableSettings> {
    let scope = Scope { database: Some(database.into()), table: Some(table.into()) };
    match scope.tables(config).as_slice() {
        [t] => Ok(t.clone()),
        [] => bail!("no configured table {table:?} in database {database:?}"),
        many => bail!("{table:?} names {} tables in database {database:?}: use schema.name", many.len()),
    }
}

/// `schema.name`, or `name` in `default_schema`. Either part may be double-quoted as in SQL
/// (`"a.b"."x y"`, `""` for a quote inside), so names with dots, spaces or quotes can be named;
/// a dot outside quotes separates the two, and a third part is refused.
fn target(into: &str, default_schema: &str) -> anyhow::Result<(String, String)> {
    let usage = || anyhow::anyhow!("--into {into:?}: use schema.name or name, double-quoting a part that holds a dot or a quote");
    let mut parts = vec![String::new()];
    let (mut quoted, mut chars) = (false, into.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                parts.last_mut().expect("one part").push('"');
            }
            ('"', _) => quoted = !quoted,
            ('.', false) => parts.push(String::new()),
            (c, _) => parts.last_mut().expect("one part").push(c),
        }
    }
    if quoted {
        return Err(usage());
    }
    match parts.as_slice() {
        [table] if !table.is_empty() => Ok((default_schema.to_string(), table.clone())),
        [schema, table] if !schema.is_empty() && !table.is_empty() => Ok((schema.clone(), table.clone())),
        _ => Err(usage()),
    }
}

pub async fn restore(config: &Config, args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let t = one_table(config, &args.database, &args.table)?;
    let range = Range { from: args.from, to: args.to };
    if let (Some(f), Some(to)) = (args.from, args.to) {
        if f >= to {
            bail!("--from {f} is not before --to {to}");
        }
    }
    let req = Request {
        database: t.database.clone(),
        table: (t.schema.clone(), t.table.clone()),
        into: args.into.as_deref().map(|i| target(i, &t.schema)).transpose()?,
        range,
        on_conflict: args.on_conflict.parse().map_err(anyhow::Error::msg)?,
        skip_damaged: args.skip_damaged,
        log_schema: config.checkpoint.schema.clone(),
        by: holds::operator(),
    };
    let scope = Scope { database: Some(t.database.clone()), table: Some(format!("{}.{}", t.schema, t.table)) };
    let prepared = setup::prepare(config, &scope, false).await?;
    let plan = restore::plan(prepared.store.as_ref(), &req).await?;
    let label = archiver_proto::table_label(&t.database, &t.schema, &t.table);
    let (ts, tt) = req.target();
    let into = format!("{ts}.{tt}");
    if args.dry_run {
        dry_run(&label, &into, &req, &plan);
        return Ok(if plan.damaged.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let source = prepared.sources.get(&t.database).context("source database not prepared")?;
    let bar = progress::progress_bar_of(true, plan.objects.len() as u64, "objects");
    let on_object = |p: restore::Progress| {
        bar.set_length(p.todo as u64);
        bar.set_position(p.objects as u64);
        bar.set_message(format!("{} rows, {} MiB", p.rows_written, p.bytes / (1024 * 1024)));
    };
    let result = restore::run(source, Arc::clone(&prepared.store), &req, plan, &on_object).await;
    progress::finish(&bar);
    let report = result?;
    if report.restored + report.already == 0 && report.damaged.is_empty() {
        println!("{label} {range}: the archive holds no rows of this range; nothing was changed");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{label} {range}: {} written into {into} from {}{}",
        count(report.rows_written as usize, "row"),
        count(report.restored, "object"),
        if report.already > 0 { format!(" ({} restored by an earlier run, skipped)", count(report.already, "object")) } else { String::new() },
    );
    if report.rows_read > report.rows_written {
        println!("{} read but not written: outside the range, superseded by a later version, or already in {into}", report.rows_read - report.rows_written);
    }
    if let Some(h) = &report.hold {
        println!("hold #{} on {label} [{}, {}): the next run leaves these rows in place; `hold release {}` when they may be archived again", h.id, h.range_start, h.range_end, h.id);
    }
    Ok(damaged(&report.damaged))
}

fn dry_run(label: &str, into: &str, req: &Request, plan: &Plan) {
    for o in &plan.objects {
        println!("{}  {} rows  {} bytes", o.object.key, o.object.rows, o.object.bytes);
    }
    println!(
        "{label} {}: would restore up to {} ({} bytes) from {} into {into}{}",
        req.range,
        count(plan.rows() as usize, "row"),
        plan.bytes(),
        count(plan.objects.len(), "object"),
        if req.in_place() { ", and hold the range" } else { "" }
    );
    for d in &plan.damaged {
        println!("damaged: {}: {}", d.key, d.problem);
    }
    println!("dry run: nothing was changed");
}

/// Names damaged objects that were skipped; failure if any.
fn damaged(d: &[Damage]) -> ExitCode {
    for d in d {
        eprintln!("not restored: {}: {}", d.key, d.problem);
    }
    if d.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub async fn validate(config: &Config, scope: &Scope, deep: bool, json: bool) -> anyhow::Result<ExitCode> {
    let tables: Vec<TableRef> = scope
        .tables(config)
        .into_iter()
        .map(|t| TableRef { database: t.database, schema: t.schema, table: t.table })
        .collect();
    if tables.is_empty() {
        bail!("no configured table matches database={} table={}", scope.database.as_deref().unwrap_or("*"), scope.table.as_deref().unwrap_or("*"));
    }
    let store = archiver_engine::storage::open(config).await?;
    let checkpoints = setup::checkpoint_stores(config, scope).await;
    let report = validate::validate(store.as_ref(), &tables, &checkpoints, deep).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for t in &report.tables {
            let state = if t.problems.is_empty() { "ok".to_string() } else { count(t.problems.len(), "problem") };
            let busy = if t.in_progress > 0 { format!(", {} of items in progress", count(t.in_progress, "object")) } else { String::new() };
            println!("{}: {}, {}, {} rows, {} bytes{busy}: {state}", t.table, count(t.manifests, "manifest"), count(t.objects, "object"), t.rows, t.bytes);
            for p in &t.problems {
                println!("  {} {}: {}", p.kind, p.key, p.detail);
            }
            if let Some(why) = &t.checkpoint {
                println!("  checked against the manifests only ({why})");
            }
        }
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// What [`stores`] does with a database that has no checkpoint store yet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// Create it (placing a hold writes anyway).
    Create,
    /// Leave it out: reading holds changes nothing, and there are none.
    Skip,
}

/// The distinct checkpoint stores of the databases `database` names (all without it).
async fn stores(config: &Config, database: Option<&str>, missing: Missing) -> anyhow::Result<Vec<(String, CheckpointStore)>> {
    let scope = Scope { database: database.map(Into::into), table: None };
    let found = setup::checkpoint_stores(config, &scope).await;
    if found.is_empty() {
        bail!("no configured database {:?}", database.unwrap_or("*"));
    }
    let mut out: Vec<(String, CheckpointStore)> = Vec::new();
    let mut names: Vec<&String> = found.keys().collect();
    names.sort();
    for name in names {
        let store = found[name].clone().map_err(anyhow::Error::msg)?;
        if config.checkpoint.url.is_some() && !out.is_empty() {
            continue; // one shared store
        }
        if missing == Missing::Skip && !store.exists().await.with_context(|| format!("checkpoint store of {name}"))? {
            continue;
        }
        store.migrate().await.with_context(|| format!("checkpoint store of {name}"))?;
        out.push((name.clone(), store));
    }
    Ok(out)
}

pub async fn hold(config: &Config, command: HoldCommand) -> anyhow::Result<()> {
    match command {
        HoldCommand::Add { database, table, from, to, reason } => {
            let t = one_table(config, &database, &table)?;
            if from >= to {
                bail!("--from {from} is not before --to {to}");
            }
            if reason.trim().is_empty() {
                bail!("--reason is empty: say why the range is held (a case, a ticket)");
            }
            let (_, store) = stores(config, Some(&t.database), Missing::Create).await?.remove(0);
            let by = holds::operator();
            let new = NewHold { database: &t.database, schema: &t.schema, table: &t.table, range_start: from, range_end: to, reason: &reason, by: &by };
            let h = store.add_hold(&new).await?;
            println!("hold #{} placed: {}", h.id, describe(&h));
        }
        HoldCommand::List { database, all, json } => {
            let mut list = Vec::new();
            for (_, store) in stores(config, database.as_deref(), Missing::Skip).await? {
                list.extend(store.holds().await?.into_iter().filter(|h| all || h.active()));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no {}holds", if all { "" } else { "active " });
            } else {
                list.iter().for_each(|h| println!("#{} {}", h.id, describe(h)));
            }
        }
        HoldCommand::Release { id, database } => release(config, id, database.as_deref()).await?,
    }
    Ok(())
}

async fn release(config: &Config, id: i64, database: Option<&str>) -> anyhow::Result<()> {
    let stores = stores(config, database, Missing::Skip).await?;
    let mut found: HashMap<String, &CheckpointStore> = HashMap::new();
    for (name, store) in &stores {
        if store.holds().await?.iter().any(|h| h.id == id && h.active()) {
            found.insert(name.clone(), store);
        }
    }
    let store = match found.len() {
        0 => bail!("no active hold #{id}: `hold list` shows the active ones"),
        1 => found.into_values().next().expect("one"),
        _ => bail!("hold #{id} exists in databases {}: say which with --database", found.into_keys().collect::<Vec<_>>().join(", ")),
    };
    let h = store.release_hold(id, &holds::operator()).await?.context("released by someone else meanwhile")?;
    println!("hold #{} released: {}", h.id, describe(&h));
    Ok(())
}

/// `db/schema.table [from, to): reason (by who at when[, released by who at when])`.
pub fn describe(h: &Hold) -> String {
    let released = match (&h.released_by, h.released_at) {
        (Some(by), Some(at)) => format!(", released by {by} at {}", at.format("%Y-%m-%d %H:%M:%S UTC")),
        _ => String::new(),
    };
    format!(
        "{} [{}, {}): {} (by {} at {}{released})",
        archiver_proto::table_label(&h.database, &h.schema_name, &h.table_name),
        h.range_start,
        h.range_end,
        h.reason,
        h.created_by,
        h.created_at.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// Active holds of the tables in `scope`, one line each (for `run --dry-run` and `status`); quiet
/// where a checkpoint store has no tables yet or cannot be reached (those commands say so).
pub async fn show_holds(config: &Config, scope: &Scope) {
    let tables = scope.tables(config);
    let found = setup::checkpoint_stores(config, scope).await;
    let mut seen = std::collections::HashSet::new();
    for store in found.values().flatten() {
        if !matches!(store.exists().await, Ok(true)) {
            continue;
        }
        let Ok(list) = store.holds().await else { continue };
        for h in list.into_iter().filter(|h| h.active()) {
            let admitted = tables.iter().any(|t| t.database == h.database && t.schema == h.schema_name && t.table == h.table_name);
            if admitted && seen.insert((h.database.clone(), h.id)) {
                println!("held: #{} {}", h.id, describe(&h));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::target;

    #[test]
    fn into_names_may_be_quoted_as_in_sql() {
        let t = |s: &str| target(s, "public").ok();
        let pair = |a: &str, b: &str| Some((a.to_string(), b.to_string()));
        assert_eq!(t("back.events"), pair("back", "events"));
        assert_eq!(t("events"), pair("public", "events"));
        assert_eq!(t(r#""a.b"."x y""#), pair("a.b", "x y"));
        assert_eq!(t(r#"a."b.c""#), pair("a", "b.c"));
        assert_eq!(t(r#"r."say ""hi""""#), pair("r", r#"say "hi""#));
        for bad in ["a.b.c", "a.", ".b", "", r#""open"#, "a..b"] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }
}
