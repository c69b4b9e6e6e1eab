//! `medfed`: the one binary. Thin: parses arguments, draws progress, and calls the library crates.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "medfed",
    version,
    about = "National medical statistics network: hospitals keep their records, the hub gets statistics only",
    long_about = "medfed runs a federated network of hospital nodes holding OMOP CDM data. Each node answers \
                  analysis requests with disclosure-checked statistics; the hub pools them.\n\n\
                  Start with `medfed synth` to make a synthetic national population, `medfed import` to load \
                  a hospital's OMOP CDM CSV export, and `medfed sql` to query a site locally."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the national network on this machine on a synthetic population and write report.html.
    Demo(cmd::demo::Args),
    /// Import an OMOP CDM CSV export (5.3 or 5.4) into a site store, quarantining bad rows.
    Import(cmd::import::Args),
    /// Run read-only SQL against one site's CDM tables (the data steward's tool).
    Sql(cmd::sql::Args),
    /// Generate a synthetic national population: one site store per hospital plus ground truth.
    Synth(cmd::synth::Args),
    /// The national hub: init, serve, register nodes, audit trail.
    Hub(cmd::hub::Args),
    /// A hospital node: init, run, approve tasks, print the audit log.
    Node(cmd::node::Args),
    /// Cohorts from ATLAS (Circe JSON), generated on a site for its own data steward.
    Cohort(cmd::cohort::Args),
    /// The analysis catalog: study analysis types and the Achilles analyses with their SQL.
    Catalog(cmd::catalog::Args),
    /// Researcher commands: submit a study and get results, or run one in this process.
    Study(cmd::study::Args),
    /// Risk models: the hub's registry, export, scoring, and a site's design matrix.
    Model(cmd::model::Args),
    /// Ask the network whether anyone carries a variant (GA4GH Beacon v2 look-up on the hub):
    /// boolean, count or frequency, as each hospital's policy allows, with a per-researcher budget
    /// on rare variants.
    Beacon(cmd::beacon::Args),
    /// Syndromic surveillance of vulnerable groups: counts added over hospitals under secure
    /// aggregation, EARS/CUSUM/Farrington/space-time scan at the hub, grouped alerts.
    Surveil(cmd::surveil::Args),
    /// The in-car emergency service: serve (MQTT in, a monitor per driver, 119 calls out),
    /// simulate a fleet, evaluate detection, and release event counts.
    Vehicles(cmd::vehicles::Args),
    /// A receiving 119 endpoint for demos and tests: takes eCall-style calls over HTTPS, once per
    /// event, and shows them.
    EmergencyCenter(cmd::vehicles::CenterArgs),
    /// The smart-city service: CAI/AQHI/heat indices from air and weather feeds, the 24-hour
    /// outlook, personal warnings for consenting citizens by vulnerability group, alert quality.
    City(cmd::city::Args),
    /// Benchmark: hub throughput for result posts under load from many simulated nodes.
    #[command(hide = true)]
    BenchHub(cmd::bench::Args),
    /// Benchmark: the federated logistic fit's compute and secure aggregation at pilot scale.
    #[command(hide = true)]
    BenchModel(cmd::bench_model::Args),
    /// Benchmark: the hub's full detector run on five years of daily counts at pilot scale.
    #[command(hide = true)]
    BenchSurveil(cmd::bench_surveil::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => cmd::demo::run(a),
        Command::Import(a) => cmd::import::run(a),
        Command::Sql(a) => cmd::sql::run(a),
        Command::Synth(a) => cmd::synth::run(a),
        Command::Hub(a) => cmd::hub::run(a),
        Command::Node(a) => cmd::node::run(a),
        Command::Study(a) => cmd::study::run(a),
        Command::Catalog(a) => cmd::catalog::run(a),
        Command::Cohort(a) => cmd::cohort::run(a),
        Command::Model(a) => cmd::model::run(a),
        Command::Beacon(a) => cmd::beacon::run(a),
        Command::Surveil(a) => cmd::surveil::run(a),
        Command::Vehicles(a) => cmd::vehicles::run(a),
        Command::EmergencyCenter(a) => cmd::vehicles::center(a),
        Command::City(a) => cmd::city::run(a),
        Command::BenchHub(a) => cmd::bench::run(a),
        Command::BenchModel(a) => cmd::bench_model::run(a),
        Command::BenchSurveil(a) => cmd::bench_surveil::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
