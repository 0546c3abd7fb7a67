import ArgumentParser
import MeshProxyCore
import NIOCore
import Yams

struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Run one gateway: mTLS on 15443, SNI routing, admin API.")

    @Option(help: "Gateway config file (YAML).")
    var config: String

    @Option(help: "Event loop threads (Envoy's --concurrency). Default: one per core.")
    var concurrency: Int?

    @OptionGroup var logging: LoggingOptions
    @Option(help: .hidden) var parentPid: Int32?

    func run() async throws {
        if let concurrency {
            guard concurrency > 0 else { throw ValidationError("--concurrency must be at least 1") }
            // Before anything touches the shared event loop group.
            NIOSingletons.groupLoopCountSuggestion = concurrency
        }
        logging.bootstrap()
        if let parentPid { ParentWatch.exitWhenGone(parentPid) }
        let gatewayConfig: GatewayConfig
        do {
            gatewayConfig = try ConfigLoader.load(GatewayConfig.self, file: config)
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
        do {
            try await GatewayNode.run(config: gatewayConfig, configPath: config)
        } catch ExitCodeError.invalidInput {
            throw ExitCode(2)
        } catch ExitCodeError.startupFailed {
            throw ExitCode(1)
        }
    }
}

struct ValidateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check topologies, gateway configs and Istio policy files; print every problem, and what Istio would do differently.")

    @Argument(help: "Files to check: topologies (with 'clusters:'), gateway configs, or Istio YAML (with 'kind:').")
    var files: [String]

    func run() async throws {
        var failed = false
        // Istio files are checked together too: a delegate may be in another file than its root.
        var istio = IstioPolicyLoader.Loaded()
        for file in files {
            do {
                switch ConfigFileKind(file: file) {
                case .istio:
                    let loaded = try IstioPolicyLoader.load(file: file)
                    (loaded.skipped + loaded.warnings.map(\.description)).forEach(printError)
                    istio.merge(loaded)
                case .topology:
                    _ = try ConfigLoader.load(Topology.self, file: file)
                case .gatewayConfig:
                    // With its policies, as the gateway would load them.
                    var config = try ConfigLoader.load(GatewayConfig.self, file: file)
                    try GatewayNode.compileRoutes(&config, configPath: file).warnings.forEach(printError)
                }
                print("\(file): ok")
            } catch {
                printError(error.description)
                failed = true
            }
        }
        VirtualServiceDelegation.warnings(istio.virtualServices, origins: istio.virtualServiceOrigins).forEach(printError)
        ExternalAuthorizers.warnings(istio).forEach(printError)
        if failed { throw ExitCode(2) }
    }
}

/// What a file given to `eastwest validate` is, by the keys of its first YAML document (not by
/// searching its text): Istio resources have `kind` and `apiVersion`, a topology `clusters`;
/// anything else is read as a gateway config (whose loader then names what is wrong).
enum ConfigFileKind {
    case istio, topology, gatewayConfig

    init(file: String) {
        let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
        let first = (try? Yams.compose_all(yaml: text)).flatMap { Array($0).first }?.mapping
        if first?["kind"] != nil, first?["apiVersion"] != nil {
            self = .istio
        } else if first?["clusters"] != nil {
            self = .topology
        } else {
            self = .gatewayConfig
        }
    }
}
