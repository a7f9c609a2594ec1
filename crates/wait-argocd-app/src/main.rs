fn main() -> std::process::ExitCode {
    wait_argocd_app::run(std::env::args_os()).into()
}
