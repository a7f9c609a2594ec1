fn main() -> std::process::ExitCode {
    wait_workflow::run(std::env::args_os()).into()
}
