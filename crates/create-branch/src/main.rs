fn main() -> std::process::ExitCode {
    create_branch::run(std::env::args_os()).into()
}
