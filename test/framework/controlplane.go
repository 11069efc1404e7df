package framework

import "github.com/nodemirror/nodemirror/internal/dev/controlplane"

// Control planes for the suites; the demo runs the same ones.
var (
	RepoRoot        = controlplane.RepoRoot
	CheckAssets     = controlplane.CheckAssets
	NewHub          = controlplane.NewHub
	NewMember       = controlplane.NewMember
	StartAll        = controlplane.StartAll
	StopAll         = controlplane.StopAll
	Kubeconfig      = controlplane.Kubeconfig
	TokenKubeconfig = controlplane.TokenKubeconfig
	InDir           = controlplane.InDir
	FreeAddr        = controlplane.FreeAddr
	WithServer      = controlplane.WithServer
	WithForeignCA   = controlplane.WithForeignCA
)
