fn main() -> std::process::ExitCode {
    validate_params::run(std::env::args_os()).into()
}
