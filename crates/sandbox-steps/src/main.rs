//! The multicall executable of the image: one binary, one link per step (as uutils/coreutils).
//! `validate-params --help` (through a link) and `sandbox-steps validate-params --help` are the
//! same. One binary keeps the image small: the steps share their libraries (TLS, HTTP, git).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

type Step = fn(Vec<OsString>) -> u8;

/// Every step, by the command name it answers to.
const STEPS: &[(&str, Step)] = &[
    (validate_params::NAME, |argv| validate_params::run(argv)),
    (create_branch::NAME, |argv| create_branch::run(argv)),
    (cleanup_branch::NAME, |argv| cleanup_branch::run(argv)),
    (wait_workflow::NAME, |argv| wait_workflow::run(argv)),
    (create_argocd_app::NAME, |argv| create_argocd_app::run(argv)),
    (delete_argocd_app::NAME, |argv| delete_argocd_app::run(argv)),
    (patch_kustomize::NAME, |argv| patch_kustomize::run(argv)),
    (purge_secrets::NAME, |argv| purge_secrets::run(argv)),
    (copy_bucket::NAME, |argv| copy_bucket::run(argv)),
    (restore_db::NAME, |argv| restore_db::run(argv)),
    (drop_db::NAME, |argv| drop_db::run(argv)),
    (sweep_sandboxes::NAME, |argv| sweep_sandboxes::run(argv)),
    (report_status::NAME, |argv| report_status::run(argv)),
    (wait_argocd_app::NAME, |argv| wait_argocd_app::run(argv)),
    (wait_image::NAME, |argv| wait_image::run(argv)),
    (admit_sandbox::NAME, |argv| admit_sandbox::run(argv)),
    (run_sql::NAME, |argv| run_sql::run(argv)),
    (mask_db::NAME, |argv| mask_db::run(argv)),
];

fn find(name: &str) -> Option<Step> {
    STEPS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, step)| *step)
}

fn file_name(arg: &OsString) -> String {
    Path::new(arg)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn usage() -> String {
    let names: Vec<&str> = STEPS.iter().map(|(n, _)| *n).collect();
    format!(
        "sandbox-steps {}: the steps of a per-pull-request sandbox, in one executable.\n\n\
         Usage: sandbox-steps <STEP> [FLAGS...]   (or run a link named after the step)\n       \
         sandbox-steps --install-links DIR      (a symlink per step in DIR)\n\n\
         Steps: {}\nEach step explains itself with --help.",
        env!("CARGO_PKG_VERSION"),
        names.join(", ")
    )
}

/// Creates `DIR/<step>` → this executable for every step (replacing stale links). In the
/// executable's own directory the links are relative (`validate-params -> sandbox-steps`), so a
/// tree built for an image stays right wherever it is unpacked.
fn install_links(dir: &Path) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let same_dir = match (exe.parent().map(Path::canonicalize), dir.canonicalize()) {
        (Some(Ok(exe_dir)), Ok(dir)) => exe_dir == dir,
        _ => false,
    };
    let target: PathBuf = match exe.file_name() {
        Some(name) if same_dir => PathBuf::from(name),
        _ => exe.clone(),
    };
    for (name, _) in STEPS {
        let link: PathBuf = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)
            .map_err(|e| format!("cannot link {}: {e}", link.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    if let Some(step) = argv.first().map(file_name).as_deref().and_then(find) {
        return step(argv).into();
    }
    let first = argv.get(1).map(|a| a.to_string_lossy().into_owned());
    match first.as_deref() {
        Some(name) if find(name).is_some() => {
            argv.remove(0);
            find(name).expect("checked")(argv).into()
        }
        Some("--help" | "-h" | "help") => {
            println!("{}", usage());
            ExitCode::SUCCESS
        }
        Some("--version" | "-V") => {
            println!("sandbox-steps {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--install-links") if argv.len() == 3 => match install_links(Path::new(&argv[2])) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        other => {
            if let Some(name) = other {
                eprintln!("error: no step named {name:?}\n");
            }
            eprintln!("{}", usage());
            ExitCode::from(2)
        }
    }
}
