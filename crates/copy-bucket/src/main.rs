fn main() -> std::process::ExitCode {
    copy_bucket::run(std::env::args_os()).into()
}
