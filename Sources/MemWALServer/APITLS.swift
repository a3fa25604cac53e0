import Foundation
import NIOSSL
import X509

/// TLS for the client API (the configuration's `tls:` section): TLS 1.2 or 1.3, and under TLS 1.2
/// only ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 (TLS 1.3's suites are all of that
/// kind). No client certificate is asked for: clients authenticate with bearer tokens.
public enum APITLS {
  /// The TLS 1.2 cipher suites offered, strongest first.
  public static let cipherSuites: [NIOTLSCipher] = [
    .TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, .TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    .TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, .TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    .TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, .TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
  ]

  /// The server configuration for the certificate chain in `certificateFile` and the key in
  /// `keyFile` (both PEM). Unreadable files, and a key that does not belong to the certificate,
  /// are errors naming the configuration key at fault (`tls.certificate` or `tls.key`).
  public static func makeServerConfiguration(certificateFile: String, keyFile: String)
    throws(ConfigurationError) -> TLSConfiguration
  {
    let chain: [NIOSSLCertificate]
    do {
      chain = try NIOSSLCertificate.fromPEMFile(certificateFile)
    } catch {
      throw ConfigurationError(
        key: "tls.certificate", reason: "\(certificateFile): \(Self.readFailure(certificateFile, error))")
    }
    guard let leaf = chain.first else {
      throw ConfigurationError(key: "tls.certificate", reason: "\(certificateFile): holds no certificate")
    }
    let privateKey: NIOSSLPrivateKey
    do {
      privateKey = try NIOSSLPrivateKey(file: keyFile, format: .pem)
    } catch {
      throw ConfigurationError(key: "tls.key", reason: "\(keyFile): \(Self.readFailure(keyFile, error))")
    }
    try checkKey(keyFile: keyFile, matches: leaf, certificateFile: certificateFile)
    var configuration = TLSConfiguration.makeServerConfiguration(
      certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(privateKey))
    configuration.minimumTLSVersion = .tlsv12
    configuration.cipherSuiteValues = cipherSuites
    configuration.certificateVerification = .none
    do {
      _ = try NIOSSLContext(configuration: configuration)
    } catch {
      throw ConfigurationError(
        key: "tls.key", reason: "\(keyFile) cannot be used with \(certificateFile): \(error)")
    }
    return configuration
  }

  /// Compares the public key of the key file with the certificate's.
  static func checkKey(keyFile: String, matches leaf: NIOSSLCertificate, certificateFile: String)
    throws(ConfigurationError)
  {
    let certificate: Certificate
    do {
      certificate = try Certificate(derEncoded: try leaf.toDERBytes())
    } catch {
      throw ConfigurationError(
        key: "tls.certificate", reason: "\(certificateFile): not a valid X.509 certificate (\(error))")
    }
    // swift-certificates reads EC, RSA and Ed25519 keys; any other kind is left to the TLS library's
    // own check when the context is made.
    guard let text = try? String(contentsOfFile: keyFile, encoding: .utf8),
      let key = try? Certificate.PrivateKey(pemEncoded: text)
    else { return }
    guard key.publicKey == certificate.publicKey else {
      throw ConfigurationError(
        key: "tls.key", reason: "\(keyFile) does not match the certificate in \(certificateFile)")
    }
  }

  static func readFailure(_ path: String, _ error: any Error) -> String {
    guard FileManager.default.fileExists(atPath: path) else { return "no such file" }
    guard FileManager.default.isReadableFile(atPath: path) else { return "cannot be read (permissions)" }
    return "not PEM (\(error))"
  }
}
