fn main() -> std::process::ExitCode {
    create_argocd_app::run(std::env::args_os()).into()
}
