//! `strata serve --config FILE`: every serve flag can be set in a TOML file,
//! keyed by its long name (`data-dir` or `data_dir`). Flags given on the
//! command line win over the file.

use anyhow::{bail, Context};
use std::ffi::OsString;
use std::path::PathBuf;

/// Returns the arguments with the config file's settings inserted right after
/// `serve` (so that later command-line flags override them). Arguments of any
/// other command come back unchanged.
pub fn expand(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    // The command is the first argument that is not a global option.
    const GLOBAL: [&str; 5] = [
        "--socket",
        "--addr",
        "--tls-ca",
        "--client-cert",
        "--client-key",
    ];
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if GLOBAL.contains(&a.as_ref()) {
            i += 2;
        } else if GLOBAL.iter().any(|g| a.starts_with(&format!("{g}="))) {
            i += 1;
        } else {
            break;
        }
    }
    if args.get(i).is_none_or(|a| a != "serve") {
        return Ok(args);
    }
    let serve_at = i;
    let mut path: Option<PathBuf> = std::env::var_os("STRATA_CONFIG")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let mut it = args[serve_at + 1..].iter();
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--config" {
            path = it.next().map(PathBuf::from);
        } else if let Some(p) = a.strip_prefix("--config=") {
            path = Some(PathBuf::from(p));
        }
    }
    let Some(path) = path else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    let settings = from_toml(&text).with_context(|| format!("in {}", path.display()))?;
    let mut out = args[..=serve_at].to_vec();
    out.extend(settings);
    out.extend_from_slice(&args[serve_at + 1..]);
    Ok(out)
}

/// The flags a config file's text stands for.
pub fn from_toml(text: &str) -> anyhow::Result<Vec<OsString>> {
    let table: toml::Table = text.parse().context("not valid TOML")?;
    let known = serve_flags();
    let mut out = Vec::new();
    for (key, value) in table {
        let name = key.replace('_', "-");
        let Some(takes_value) = known.iter().find(|(n, _)| *n == name).map(|(_, v)| *v) else {
            bail!("unknown setting {key:?}: settings are the long names of `strata serve --help`'s flags");
        };
        if name == "config" {
            bail!("a config file cannot name another config file");
        }
        let flag = format!("--{name}");
        match (value, takes_value) {
            (toml::Value::Boolean(true), false) => out.push(flag.into()),
            (toml::Value::Boolean(false), false) => {}
            (toml::Value::String(s), true) => out.push(format!("{flag}={s}").into()),
            (toml::Value::Integer(i), true) => out.push(format!("{flag}={i}").into()),
            (toml::Value::Float(f), true) => out.push(format!("{flag}={f}").into()),
            (v, true) => bail!(
                "{key}: expected a string or a number, found {}",
                v.type_str()
            ),
            (v, false) => bail!(
                "{key} is a switch: expected true or false, found {}",
                v.type_str()
            ),
        }
    }
    Ok(out)
}

/// Long names of `strata serve`'s flags (and the global ones), and whether
/// each takes a value.
fn serve_flags() -> Vec<(String, bool)> {
    use clap::CommandFactory;
    let cmd = super::Cli::command();
    let serve = cmd
        .find_subcommand("serve")
        .expect("the serve subcommand exists");
    serve
        .get_arguments()
        .chain(cmd.get_arguments())
        .filter_map(|a| {
            let takes = a.get_action().takes_values();
            a.get_long().map(|l| (l.to_string(), takes))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_become_flags_and_mistakes_are_named() {
        let flags = from_toml(
            "data_dir = \"/srv/strata\"\nzstd-level = 5\nno_preflate = true\nmax-blob-size = \"20G\"\n",
        )
        .unwrap();
        let flags: Vec<String> = flags
            .into_iter()
            .map(|f| f.into_string().unwrap())
            .collect();
        for f in [
            "--data-dir=/srv/strata",
            "--zstd-level=5",
            "--no-preflate",
            "--max-blob-size=20G",
        ] {
            assert!(flags.contains(&f.to_string()), "{f} missing from {flags:?}");
        }
        let e = from_toml("zstd_levle = 5").unwrap_err().to_string();
        assert!(e.contains("zstd_levle"), "{e}");
        assert!(from_toml("no-preflate = 3").is_err());
        assert!(from_toml("zstd-level = [1]").is_err());
        assert!(from_toml("not toml").is_err());
    }

    #[test]
    fn command_line_flags_come_after_the_file() {
        let dir = std::env::temp_dir().join(format!("strata-cfg-{}", std::process::id()));
        std::fs::write(&dir, "zstd-level = 5\n").unwrap();
        let args: Vec<OsString> = ["strata", "serve", "--zstd-level", "7", "--config"]
            .iter()
            .map(OsString::from)
            .chain([dir.clone().into_os_string()])
            .collect();
        let out = expand(args).unwrap();
        std::fs::remove_file(&dir).unwrap();
        let out: Vec<String> = out.into_iter().map(|f| f.into_string().unwrap()).collect();
        assert_eq!(&out[..3], ["strata", "serve", "--zstd-level=5"]);
        assert_eq!(&out[3..5], ["--zstd-level", "7"]);
        use clap::Parser;
        let cli = super::super::Cli::try_parse_from(out).unwrap();
        let super::super::Command::Serve(a) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(a.zstd_level, 7, "the command line wins");
    }
}
