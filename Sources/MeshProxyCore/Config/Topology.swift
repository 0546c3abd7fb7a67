import Foundation

/// A whole multi-cluster set-up (`topologies/*.yaml`): clusters, their gateways and services.
/// `eastwest up` turns it into one `GatewayConfig` per gateway plus demo backends.
package struct Topology: Codable, Sendable, Equatable {
    package var name: String
    /// Default `cluster.local`.
    package var trustDomain: String?
    package var clusters: [Cluster]
    /// Istio YAML files, relative to the topology file (`resolvingPolicies` makes them absolute).
    package var policies: [String]?
    /// Timing for every gateway's federation (`profile`, `timing`); seeds are derived.
    package var federation: FederationConfig?
    /// Every gateway's HTTP access-log format (Envoy's command operators); absent: Istio's default.
    package var accessLogFormat: String?
    /// Passed to every gateway: CA certificates trusted for `jwksUri` servers.
    package var jwksCACertificates: String?
    /// `TEXT` (default) or `JSON`, for every gateway.
    package var accessLogEncoding: AccessLogEncoding?
    /// Istio's `COMPLIANCE_POLICY` for every gateway's mTLS (`pqc`); absent, Envoy's defaults.
    package var compliancePolicy: GatewayConfig.CompliancePolicy?

    package struct Cluster: Codable, Sendable, Equatable {
        package var name: String
        package var network: String?
        package var gateways: [Gateway]
        package var services: [GatewayConfig.ServiceConfig]?
    }

    package struct Gateway: Codable, Sendable, Equatable {
        package var name: String
        /// An IP address (the gateway listens on port 15443) or `ip:port`.
        package var address: String
        package var locality: Locality?
        /// Admin port on the same address. Default 15000.
        package var adminPort: Int?
        /// What Gateway resources select it by; default `{istio: eastwestgateway}`.
        package var labels: [String: String]?
        /// Default `istio-system`.
        package var namespace: String?

        package var listen: HostPort? {
            HostPort(parsing: address) ?? (address.isEmpty || address.contains(":") ? nil : HostPort(host: address, port: 15443))
        }
        package var admin: HostPort? { listen.map { HostPort(host: $0.host, port: adminPort ?? 15000) } }
    }

    package var effectiveTrustDomain: String { trustDomain ?? "cluster.local" }

    /// Every service host in the topology; gateway certificates carry them as DNS SANs so a
    /// client can verify a gateway by the name it asked for.
    package var serviceHosts: [String] {
        Array(Set(clusters.flatMap { ($0.services ?? []).map(\.host) })).sorted()
    }

    /// The config of one gateway: its own cluster's services and seed addresses; every other
    /// cluster is learned by gossip. The seeds are the first gateway of every other cluster
    /// and the other gateways of its own, so any one of them being up is enough to join.
    package func gatewayConfig(cluster: Cluster, gateway: Gateway, tls: GatewayConfig.TLSFiles) -> GatewayConfig {
        var seeds: [HostPort] = cluster.gateways.filter { $0.name != gateway.name }.compactMap(\.listen)
        seeds += clusters.filter { $0.name != cluster.name }.compactMap { $0.gateways.first?.listen }
        var config = GatewayConfig(
            name: gateway.name, cluster: cluster.name, network: cluster.network, locality: gateway.locality,
            trustDomain: effectiveTrustDomain, listen: gateway.listen!, admin: gateway.admin, tls: tls,
            services: cluster.services ?? [],
            federation: FederationConfig(seeds: seeds, profile: federation?.profile, timing: federation?.timing))
        config.policies = policies
        config.labels = gateway.labels
        config.namespace = gateway.namespace
        config.accessLogFormat = accessLogFormat
        config.jwksCACertificates = jwksCACertificates
        config.accessLogEncoding = accessLogEncoding
        config.compliancePolicy = compliancePolicy
        return config
    }

    /// The topology with its policy paths made absolute against the topology file's folder,
    /// so gateway configs written elsewhere still find them.
    package func resolvingPolicies(relativeTo file: String) -> Topology {
        var copy = self
        let base = URL(fileURLWithPath: file).deletingLastPathComponent()
        copy.policies = policies?.map { $0.hasPrefix("/") ? $0 : base.appendingPathComponent($0).standardizedFileURL.path }
        copy.jwksCACertificates = jwksCACertificates.map { $0.hasPrefix("/") ? $0 : base.appendingPathComponent($0).standardizedFileURL.path }
        return copy
    }

    /// Every gateway's name, for readiness checks.
    package var gatewayNames: [String] { clusters.flatMap { $0.gateways.map(\.name) } }
}

extension Topology: ConfigValidatable {
    package func validate(_ map: SourceMap) -> [ConfigError] {
        var errors: [ConfigError] = []
        let root = FieldPath()
        if name.isEmpty || name.contains("/") {
            errors.append(map.error(.invalidValue, at: root.key("name"), "must be a non-empty name without '/'"))
        }
        errors += ServiceListValidator.validateTrustDomain(trustDomain, at: root.key("trustDomain"), map: map)
        if clusters.isEmpty {
            errors.append(map.error(.invalidValue, at: root.key("clusters"), "a topology needs at least one cluster"))
        }
        var clusterNames = Set<String>(), gatewayNames = Set<String>(), listenAddresses = Set<HostPort>()
        var endpointAddresses = Set<HostPort>()
        for (c, cluster) in clusters.enumerated() {
            let cpath = root.key("clusters").index(c)
            if let problem = GatewayIdentity.problem(withClusterName: cluster.name) {
                errors.append(map.error(.invalidValue, at: cpath.key("name"), problem))
            } else if !clusterNames.insert(cluster.name).inserted {
                errors.append(map.error(.duplicate, at: cpath.key("name"), "cluster '\(cluster.name)' appears twice"))
            }
            if cluster.gateways.isEmpty {
                errors.append(map.error(.invalidValue, at: cpath.key("gateways"), "cluster '\(cluster.name)' needs at least one gateway"))
            }
            for (g, gateway) in cluster.gateways.enumerated() {
                let gpath = cpath.key("gateways").index(g)
                if !gatewayNames.insert(gateway.name).inserted {
                    errors.append(map.error(.duplicate, at: gpath.key("name"), "gateway '\(gateway.name)' appears twice"))
                }
                if let listen = gateway.listen {
                    if !listenAddresses.insert(listen).inserted {
                        errors.append(map.error(.duplicate, at: gpath.key("address"), "address \(listen) is used by another gateway"))
                    }
                } else {
                    errors.append(map.error(.invalidValue, at: gpath.key("address"), "'\(gateway.address)' is not an IP address or ip:port"))
                }
                if let port = gateway.adminPort, !(1...65_535).contains(port) {
                    errors.append(map.error(.invalidValue, at: gpath.key("adminPort"), "\(port) is not a port from 1 to 65535"))
                }
            }
            let services = cluster.services ?? []
            errors += ServiceListValidator.validate(services, at: cpath.key("services"), map: map)
            for (s, service) in services.enumerated() {
                for (e, endpoint) in service.endpoints.enumerated() where !endpointAddresses.insert(endpoint.address).inserted {
                    errors.append(map.error(.duplicate, at: cpath.key("services").index(s).key("endpoints").index(e).key("address"),
                                            "endpoint address \(endpoint.address) is used twice"))
                }
            }
        }
        if federation?.seeds != nil {
            errors.append(map.error(.invalidValue, at: root.key("federation").key("seeds"),
                                    "a topology derives every gateway's seeds; leave them out"))
        }
        errors += federation?.validate(at: root.key("federation"), map: map) ?? []
        errors += AccessLogFormat.validate(accessLogFormat, encoding: accessLogEncoding, at: root, map: map)
        return errors
    }
}
