fn main() -> std::process::ExitCode {
    purge_secrets::run(std::env::args_os()).into()
}
