import AsyncHTTPClient
import Foundation
import Logging
import MeshProxyCore
import NIOCore
import NIOSSL

/// Fetches the network `jwksUri`s of the gateway's RequestAuthentications as istiod does for
/// its proxies: at start, then every 20 minutes (istiod's `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`).
/// A failed fetch keeps the keys it had (none at first: tokens are rejected, fail closed, as
/// Envoy does without its JWKS) and is tried again after 1 s, then twice as long each time, up to
/// the refresh interval. The server is verified against the system's CAs and the configured
/// `jwksCACertificates`.
struct JWKSFetcher {
    let remotes: [RemoteJWKS]
    let caCertificates: String?
    let logger: Logger

    static let refreshInterval = Duration.seconds(20 * 60)
    static let firstRetry = Duration.seconds(1)
    /// A JWKS larger than this is not one.
    static let bodyLimit = 1 << 20

    /// Runs until cancelled.
    func run() async {
        guard !remotes.isEmpty else { return }
        var tls = TLSConfiguration.makeClientConfiguration()
        if let caCertificates { tls.additionalTrustRoots = [.file(caCertificates)] }
        let client = HTTPClient(eventLoopGroupProvider: .singleton,
                                configuration: .init(tlsConfiguration: tls, timeout: .init(connect: .seconds(5), read: .seconds(10))))
        await withTaskGroup(of: Void.self) { group in
            for remote in remotes { group.addTask { await keepFresh(remote, client: client) } }
        }
        try? await client.shutdown()
    }

    private func keepFresh(_ remote: RemoteJWKS, client: HTTPClient) async {
        var retry = Self.firstRetry
        while !Task.isCancelled {
            let wait: Duration
            switch await fetch(remote.uri, client: client) {
            case .success(let set):
                remote.update(set)
                logger.info("JWKS fetched", metadata: ["uri": "\(remote.uri)", "keys": "\(set.keys.count)",
                                                       "kids": "\(set.keys.compactMap(\.kid).joined(separator: ","))"])
                retry = Self.firstRetry
                wait = Self.refreshInterval
            case .failure(let problem):
                logger.warning("JWKS fetch failed; tokens for its issuer are judged by the keys fetched before (none: rejected)",
                               metadata: ["uri": "\(remote.uri)", "error": "\(problem.message)", "retry": "\(retry)"])
                wait = retry
                retry = min(retry * 2, Self.refreshInterval)
            }
            try? await Task.sleep(for: wait)
        }
    }

    private func fetch(_ uri: String, client: HTTPClient) async -> Result<JWKSet, JWKSet.Problem> {
        do {
            let response = try await client.execute(HTTPClientRequest(url: uri), timeout: .seconds(15))
            let body = try await response.body.collect(upTo: Self.bodyLimit)
            guard response.status == .ok else { return .failure(JWKSet.Problem(message: "answered \(response.status.code)")) }
            return JWKSet.parse(Data(body.readableBytesView))
        } catch {
            return .failure(JWKSet.Problem(message: "\(error)"))
        }
    }
}
