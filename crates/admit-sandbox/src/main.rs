fn main() -> std::process::ExitCode {
    admit_sandbox::run(std::env::args_os()).into()
}
