// Package argocdlua runs Argo CD resource customization scripts — health
// checks, action discovery and actions — over unstructured objects the way
// Argo CD runs them, so that the scripts in argocd/resource_customizations
// can be tested here, on objects the operator really wrote, without Argo CD.
//
// What matches Argo CD (util/lua in argoproj/argo-cd):
//   - the Lua VM is github.com/yuin/gopher-lua;
//   - a script sees the resource as the global obj, converted the same way
//     (JSON null becomes nil, so absent and null fields look alike), and the
//     action parameters as the global actionParams;
//   - without UseOpenLibs (the default for argocd-cm scripts) only the base,
//     package and table libraries are open, with an os module that holds
//     os.time and os.date only: no string, math, io or debug library, and no
//     string methods ("s:find" fails);
//   - with UseOpenLibs (Argo CD's built-in scripts, or argocd-cm with
//     resource.customizations.useOpenLibs.<group>_<kind>) every library is
//     open, the whole os library included;
//   - a run is cut off after one second;
//   - the returned table is read the way Argo CD reads it: through JSON,
//     where an empty table is an empty array, a table with keys 1..n an
//     array and one with string keys an object; the same conversion errors.
//
// It does not implement Argo CD's lookup of argocd-cm overrides, wildcard
// customizations or the built-in health checks of Kubernetes kinds.
package argocdlua
