fn main() -> std::process::ExitCode {
    report_status::run(std::env::args_os()).into()
}
