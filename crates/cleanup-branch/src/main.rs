fn main() -> std::process::ExitCode {
    cleanup_branch::run(std::env::args_os()).into()
}
