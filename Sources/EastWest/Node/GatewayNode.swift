import Federation
import Foundation
import Logging
import MeshProxyCore
import Metrics
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle

/// One gateway process: the 15443 listener and the admin listener, run as a service that drains
/// on SIGTERM (stop accepting, let connections finish up to the drain timeout, exit 0).
struct GatewayNode: Service {
    let config: GatewayConfig
    let tls: GatewayTLS
    let routes: RouteConfiguration
    let registry: PrometheusCollectorRegistry
    let group: any EventLoopGroup
    let logger: Logger

    static func run(config configured: GatewayConfig, configPath: String) async throws {
        var config = configured
        var logger = Logger(label: "eastwest.gateway")
        logger[metadataKey: "gateway"] = "\(config.name)"
        let tls: GatewayTLS
        do {
            // Reads files: done here, before any event loop work.
            tls = try GatewayTLS(config: config)
        } catch {
            printError("\(configPath): error: tls: \(error)")
            throw ExitCodeError.invalidInput
        }
        let routes: RouteConfiguration
        do {
            let compiled = try compileRoutes(&config, configPath: configPath)
            routes = compiled.routes
            // What the policies ask for and this gateway does not do, in its log at start.
            for warning in compiled.warnings { logger.warning("\(warning)") }
        } catch {
            printError(error.description)
            throw ExitCodeError.invalidInput
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let node = GatewayNode(config: config, tls: tls, routes: routes, registry: registry,
                               group: MultiThreadedEventLoopGroup.singleton, logger: logger)
        // The lifecycle's own debug lines print the whole node; keep them out of gateway logs.
        var lifecycleLogger = Logger(label: "eastwest.lifecycle")
        lifecycleLogger.logLevel = .notice
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: node)], gracefulShutdownSignals: [.sigterm, .sigint], logger: lifecycleLogger))
        try await group.run()
    }

    /// The gateway's policies (paths relative to its config file) compiled into its routes, with
    /// its ServiceEntries (and the WorkloadEntries they select) joined into `services:`: from
    /// here on those are served and gossiped like the others. What `run` serves, `eastwest route
    /// --config` explains and `eastwest validate` checks; `warnings` name what loads but is not
    /// carried out (skipped kinds, fields, Gateway servers on other ports).
    static func compileRoutes(_ config: inout GatewayConfig, configPath: String) throws(ConfigErrors) -> (routes: RouteConfiguration, warnings: [String]) {
        var resources = IstioPolicyLoader.Loaded()
        let base = URL(fileURLWithPath: configPath).deletingLastPathComponent()
        for file in config.policies ?? [] {
            let path = file.hasPrefix("/") ? file : base.appendingPathComponent(file).path
            resources.merge(try IstioPolicyLoader.load(file: path))
        }
        config.services = (config.services ?? [])
            + ServiceEntry.services(resources.serviceEntries, workloads: resources.workloadEntries, cluster: config.cluster)
        let warnings = resources.skipped + resources.warnings.map(\.description)
            + GatewayServers.unserved(resources.gateways, origins: resources.gatewayOrigins, labels: config.effectiveLabels, port: config.listen.port)
            + VirtualServiceDelegation.warnings(resources.virtualServices, origins: resources.virtualServiceOrigins)
            + PeerAuthentication.gatewayWarnings(resources.peerAuthentications)
            + EnvoyFilter.gatewayWarnings(resources.envoyFilters, labels: config.effectiveLabels, namespace: config.effectiveNamespace)
            + ExternalAuthorizers.warnings(resources)
        return (PolicyCompiler.compile(config: config, resources: resources), warnings)
    }

    /// Gossip with other gateways, when the config asks for it.
    func makeGossip(clusters: ClusterManager, outliers: OutlierTracker) throws -> GossipService? {
        guard let federation = config.federation else { return nil }
        var records: [CatalogKey: CatalogRecord] = [:]
        for service in config.services ?? [] {
            for endpoint in service.endpoints {
                records[CatalogKey(host: service.host, port: service.port, endpoint: endpoint.address)] =
                    CatalogRecord(locality: endpoint.locality, labels: endpoint.labels ?? [:], protocol: service.protocol)
            }
        }
        var gossipLogger = logger
        gossipLogger[metadataKey: "component"] = "federation"
        let base = config.meshEndpoints
        return try GossipService(id: MemberID(config.name), address: config.listen, cluster: config.cluster,
                             settings: MembershipSettings(federation),
                             seeds: federation.seeds ?? [], records: records, tls: tls, group: group, logger: gossipLogger,
                             onChange: { view in
                                 // New connections route by what federation knows now.
                                 let endpoints = view.meshEndpoints(base: base)
                                 clusters.update { $0.endpoints = endpoints }
                                 outliers.reconfigure()
                             })
    }

    func run() async throws {
        let clusters = ClusterManager(routes: routes, endpoints: config.meshEndpoints)
        let outliers = OutlierTracker(clusters: clusters, logger: logger)
        let blackholes = Blackholes(clusters: clusters, logger: logger)
        let gossip = try makeGossip(clusters: clusters, outliers: outliers)
        let dataPlane = DataPlane(config: config, tls: tls, routes: routes, clusters: clusters, outliers: outliers, logger: logger,
                                  peerGatewayUnreachable: { gateway in gossip?.reportUnreachable(gateway) })
        // Ends ejections on time (Envoy's interval timer, at one-second resolution).
        let sweeper = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                outliers.sweep()
                blackholes.sweep()
            }
        }
        defer { sweeper.cancel() }
        let jwks = Task { [routes, config, logger] in
            await JWKSFetcher(remotes: Array(routes.remoteJWKS.values), caCertificates: config.jwksCACertificates, logger: logger).run()
        }
        defer { jwks.cancel() }
        var acceptor: (@Sendable (any Channel) throws -> Void)?
        if let gossip {
            acceptor = { channel in try gossip.acceptConnection(channel) }
        }
        let listener = GatewayListener(dataPlane: dataPlane, group: group, federationServerName: FederationTransport.serverName,
                                       federationAcceptor: acceptor)
        let ready = ReadyFlag()
        let admin: any Channel
        let bound: SocketAddress
        do {
            bound = try await listener.bind()
            // TLS on the admin port for operators' writes: the gateway's own certificate, any mesh
            // client certificate verified; the identity decides (adminOperators).
            let adminTLS = ControlHTTPServer.MutualTLS(context: try tls.contexts(applicationProtocols: ["http/1.1"]).server, verifier: tls.clients)
            admin = try await ControlHTTPServer.bind(
                host: config.effectiveAdmin.host, port: config.effectiveAdmin.port, role: "admin listener",
                group: group, tls: adminTLS,
                responder: AdminAPI(config: config, registry: registry, ready: ready, gossip: gossip, dataPlane: dataPlane, blackholes: blackholes,
                                    writeToken: config.adminTokenFile.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) }
                                        .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.flatMap { $0.isEmpty ? nil : $0 },
                                    operators: config.effectiveAdminOperators).respond)
        } catch {
            printError("error: \(error)")
            _ = await listener.drain(timeout: .zero)
            throw ExitCodeError.startupFailed
        }
        // Ended below, after the drain: the gossip loop announces our leave when cancelled.
        let gossipTask = gossip.map { service in Task { await service.run() } }
        ready.set(true)
        logger.info("gateway ready", metadata: [
            "listen": "\(bound.ipAddress ?? "?"):\(bound.port ?? 0)", "admin": "\(config.effectiveAdmin)", "cluster": "\(config.cluster)",
            "identity": "\(tls.identity?.description ?? "-")"])

        try? await gracefulShutdown()

        ready.set(false)
        logger.info("draining", metadata: ["timeout": "\(config.drainTimeout)"])
        let clean = await listener.drain(timeout: config.drainTimeout)
        logger.info(clean ? "drained; every connection finished" : "drain timeout reached; closing remaining connections")
        gossipTask?.cancel()
        await gossipTask?.value
        try? await admin.close()
    }
}

/// Exit codes the process ends with; `main` maps them.
enum ExitCodeError: Error {
    /// Bad config or certificate files: 2, like a usage error.
    case invalidInput
    /// Could not bind: 1.
    case startupFailed
}
