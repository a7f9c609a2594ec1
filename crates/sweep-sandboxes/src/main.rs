fn main() -> std::process::ExitCode {
    sweep_sandboxes::run(std::env::args_os()).into()
}
