fn main() -> std::process::ExitCode {
    delete_argocd_app::run(std::env::args_os()).into()
}
