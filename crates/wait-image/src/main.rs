fn main() -> std::process::ExitCode {
    wait_image::run(std::env::args_os()).into()
}
