fn main() -> std::process::ExitCode {
    run_sql::run(std::env::args_os()).into()
}
