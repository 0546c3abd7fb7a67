import ArgumentParser
import Foundation
import Logging

@main
struct EastWestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eastwest",
        abstract: "Multi-cluster east-west gateway and federation for Istio-style meshes.",
        subcommands: [UpCommand.self, GatewayCommand.self, CACommand.self, DemoBackendCommand.self, ValidateCommand.self, PlanCommand.self, RouteCommand.self, SimulateCommand.self, MembersCommand.self, EndpointsCommand.self, DrillCommand.self, LoadCommand.self])
}

/// Options every long-running subcommand shares.
struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func bootstrap() {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// Prints to standard error: what a user must read even when stdout is piped.
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// Prints to standard output unbuffered, so progress reaches a pipe or log file as it happens.
func say(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}
